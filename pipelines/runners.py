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
# Runners whose options are all declared in ``apache_beam.options.pipeline_options``; another runner (Dask, a
# runner of your own) may declare options in its own module, which is imported only when the job starts.
RUNNERS_WITH_KNOWN_OPTIONS = ("", "directrunner", "bundlebaseddirectrunner", "switchingdirectrunner",
                              "prismrunner", "flinkrunner", "sparkrunner", "dataflowrunner", "portablerunner")


class BeamFlagError(ValueError):
    """A flag passed on to Beam that Beam cannot take: one sentence."""


def beam_option_parser():
    """The argument parser Beam builds from every ``PipelineOptions`` class imported so far (Beam's own
    ``get_all_options`` hands it to ``add_extra_args_fn``); its ``error`` raises ``BeamFlagError``."""
    from apache_beam.options.pipeline_options import PipelineOptions

    box = {}
    PipelineOptions([]).get_all_options(add_extra_args_fn=lambda parser: box.setdefault("parser", parser))
    parser = box["parser"]

    def error(message):
        if not message.startswith("ambiguous option: "):  # Beam's parser ignores these too
            raise BeamFlagError(message)

    parser.error = error
    return parser


def unknown_beam_flags(beam_args: list[str]) -> tuple[list[str], list[str]]:
    """``(unknown, known)``: the arguments among ``beam_args`` that no Beam pipeline option takes (Beam would
    drop them with a log line, so a mistyped flag would silently change nothing), and every option string Beam
    knows. Nothing is unknown for runners outside ``RUNNERS_WITH_KNOWN_OPTIONS``. A value Beam refuses (an
    invalid choice, a number that is not one) raises ``BeamFlagError``."""
    parser = beam_option_parser()
    known_args, unknown = parser.parse_known_args(list(beam_args))
    runner = known_args.runner if isinstance(known_args.runner, str) or known_args.runner is None else ""
    if (runner or "").rsplit(".", 1)[-1].lower() not in RUNNERS_WITH_KNOWN_OPTIONS:
        unknown = []
    known = sorted(s for action in parser._actions for s in action.option_strings if s.startswith("--"))
    return unknown, known


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
