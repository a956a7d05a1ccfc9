"""Pipeline options seqwatch sets for particular Beam runners.

Prism (Beam's portable local runner, 2.77) splits a slow bundle of a stateful stage and hands the residual's keys
back to its scheduler while the primary part of the bundle still holds the same keys (``splitBundle`` in Prism's
``elementmanager.go`` removes them from its in-progress set). A second bundle can then process a key that the
first is still processing, and state written by one of them is lost. seqwatch's stateful steps (late gate,
incident merge, online calibration, flushes of the quarantine, counts and reading archive) rely on one bundle per
key, as Beam's model promises; measured on this machine, a replay on Prism lost the reading-archive writes of 9
of one entity's 119 batches in one run of four. Prism's own experiment ``prism_disable_sdf_split`` turns those
runner-initiated splits off (a splittable DoFn still checkpoints itself), so every run on Prism, and on the
DirectRunner (which in Beam 2.77 can hand a job to Prism), gets it.
"""
from __future__ import annotations

PRISM_NO_SPLIT = "prism_disable_sdf_split"


def runner_name(options) -> str:
    """The runner the options name, lower case, without module path ('' when none is named)."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    name = runner if runner is None or isinstance(runner, str) else type(runner).__name__
    return (name or "").rsplit(".", 1)[-1].lower()


def apply_runner_fixes(options):
    """``options`` with the settings seqwatch needs on their runner (see the module docstring); returns them."""
    from apache_beam.options.pipeline_options import DebugOptions

    name = runner_name(options)
    if not name or "prism" in name or "direct" in name:
        debug = options.view_as(DebugOptions)
        if PRISM_NO_SPLIT not in (debug.experiments or []):
            debug.add_experiment(PRISM_NO_SPLIT)
    return options
