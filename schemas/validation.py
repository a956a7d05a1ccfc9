"""Validating readings against a great-expectations suite, one batch (a pandas frame) at a time.

Suites are JSON files of GX 1.x expectations over the long-format columns ``entity_id, channel, timestamp
(int µs UTC), value``. Bundled families: ``sensor``, ``energy`` and ``health`` (``schemas/suites/``); a user can
pass the path of their own suite file. Physical bounds per kind of channel use GX row conditions on the channel
name (e.g. ``channel.str.contains("temp")``).

``SuiteValidator.failures(frame)`` runs the whole suite once on the batch (not once per row) and returns, for
each row, the first expectation it failed, so that only failing rows, not the whole batch, are quarantined.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

SUITES_DIR = Path(__file__).parent / "suites"
FAMILIES = tuple(sorted(p.stem for p in SUITES_DIR.glob("*.json")))


class SuiteError(ValueError):
    """A suite name or file is invalid."""


def load_suite_dict(family_or_path: str) -> dict:
    """The suite JSON of a bundled family (``sensor``, ``energy``, ``health``) or of a user's file."""
    path = SUITES_DIR / f"{family_or_path}.json" if family_or_path in FAMILIES else Path(family_or_path)
    if not path.is_file():
        raise SuiteError(f"suite {family_or_path!r} is neither a bundled family {list(FAMILIES)} nor a file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SuiteError(f"suite file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise SuiteError(f"suite file {path} needs a list of 'expectations'")
    return data


def _describe(config) -> str:
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("column", "condition_parser", "batch_id")}
    condition = kwargs.pop("row_condition", None)
    text = f"{config.type}({config.kwargs.get('column')}"
    text += "".join(f", {k}={v}" for k, v in sorted(kwargs.items())) + ")"
    if condition:
        text += f" where {getattr(condition, 'pass_through_filter', condition)}"
    return text


class SuiteValidator:
    """Runs one GX suite on pandas batches. Construct once per worker (GX start-up takes seconds)."""

    def __init__(self, suite: dict):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.suite_dict = suite
        try:
            self.suite = gx.ExpectationSuite(**suite)
        except Exception as exc:  # GX raises pydantic and its own errors for a bad expectation
            raise SuiteError(f"suite {suite.get('name')!r} has an invalid expectation: {exc}") from None
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        source = context.data_sources.add_pandas("seqwatch_readings")
        self._batch_definition = source.add_dataframe_asset("batch").add_batch_definition_whole_dataframe("whole")
        self.descriptions = [_describe(e.configuration) for e in self.suite.expectations]

    @property
    def name(self) -> str:
        return self.suite.name

    def failures(self, frame: pd.DataFrame) -> np.ndarray:
        """For each row of ``frame``, the position of the first failed expectation in the suite, or -1."""
        first = np.full(len(frame), -1, dtype=np.int64)
        if len(frame) == 0:
            return first
        data = frame.reset_index(drop=True)
        batch = self._batch_definition.get_batch(batch_parameters={"dataframe": data})
        result = batch.validate(self.suite, result_format={"result_format": "COMPLETE"})
        for position, outcome in enumerate(result.results):
            if outcome.success:
                continue
            if outcome.exception_info and outcome.exception_info.get("raised_exception"):
                raise SuiteError(f"expectation {self.descriptions[position]} could not run: "
                                 f"{outcome.exception_info.get('exception_message')}")
            rows = np.asarray(outcome.result.get("unexpected_index_list") or [], dtype=np.int64)
            rows = rows[first[rows] == -1]
            first[rows] = position
        return first
