"""The Dataflow Flex Template's entry point (``FLEX_TEMPLATE_PYTHON_PY_FILE`` in this folder's Dockerfile).

Dataflow's launcher runs this file with the template's parameters as ``--name=value`` (``--model_dir=gs://...``)
beside Dataflow's own options (``--runner``, ``--project``, ``--region``, ``--temp_location``, ...). The
parameters become ``seqwatch run``'s flags, with ``--commit-in-job``: the launcher submits the job and goes, and
the job's last step moves the outputs into place and writes ``manifest.json`` (``seqwatch.pipelines.batch
.CommitInJob``). Dataflow's options pass on to Beam as they are. ``metadata.json`` names the same parameters.
"""
from __future__ import annotations

import os
import sys

# template parameter -> the `seqwatch run` flag it sets
FLAGS = {
    "input": "--input", "output": "--output", "model_dir": "--model-dir", "format": "--format",
    "mapping": "--mapping", "timestamp_column": "--timestamp-column", "entity_column": "--entity-column",
    "entity": "--entity", "timezone": "--timezone", "timestamp_format": "--timestamp-format", "sep": "--sep",
    "suite": "--suite", "run_id": "--run-id", "pane_steps": "--pane-steps", "alert_cooldown": "--alert-cooldown",
    "calibration_from": "--calibration-from", "calibration_keep_days": "--calibration-keep-days",
    "earliest": "--earliest", "max_quarantined_share": "--max-quarantined-share",
}
# template parameters of "true" or "false" -> the `seqwatch run` switch "true" sets
SWITCHES = {"online_calibration": "--online-calibration"}
# The image's own name, given when it was built (the Dockerfile's IMAGE): the workers' image unless the launch names
# another with --sdk_container_image (Beam's default image has no seqwatch, and its workers would fail to import it)
IMAGE_VARIABLE = "SEQWATCH_TEMPLATE_IMAGE"


class ParameterError(ValueError):
    """A template parameter that cannot become a flag; the message is one sentence for a person."""


def run_argv(argv: list[str], environ=os.environ) -> list[str]:
    """``seqwatch run``'s arguments for the launcher's ``argv``: each template parameter as its flag, the rest (Beam's
    options) as given, and the image the template was built as for the workers where no other is named."""
    out = ["run", "--commit-in-job"]
    image = environ.get(IMAGE_VARIABLE, "")
    if image and not any(arg.startswith(("--sdk_container_image", "--worker_harness_container_image"))
                         for arg in argv):
        out.append(f"--sdk_container_image={image}")
    argv = list(argv)
    for i, arg in enumerate(argv[:-1]):  # a parameter given as two words (--model_dir gs://...): as one
        if arg[2:] in {*FLAGS, *SWITCHES} and arg.startswith("--") and not argv[i + 1].startswith("--"):
            argv[i:i + 2] = [f"{arg}={argv[i + 1]}", None]
    for arg in filter(None, argv):
        name, equals, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if equals and name in FLAGS:
            out += [FLAGS[name], value]
        elif equals and name in SWITCHES:
            if value.strip().lower() not in ("true", "false"):
                raise ParameterError(f"the template parameter {name} is true or false, got {value!r}")
            out += [SWITCHES[name]] * (value.strip().lower() == "true")
        else:
            out.append(arg)
    return out


if __name__ == "__main__":
    try:
        arguments = run_argv(sys.argv[1:])
    except ParameterError as exc:
        print(f"seqwatch template: {exc}", file=sys.stderr)
        sys.exit(2)
    from seqwatch.pipelines.cli import main

    sys.exit(main(arguments))
