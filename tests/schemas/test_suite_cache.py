"""A suite that GX checked once and that runs entirely in pandas is kept compiled, so later runs (and each
Beam worker) skip importing GX; the compiled validator judges every row exactly as the first one did."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd

from seqwatch.schemas.validation import FAMILIES, SUITE_CACHE_ENV, SuiteValidator, load_suite_dict

USER_SUITE = {"name": "mine", "expectations": [
    {"type": "expect_column_values_to_be_between",
     "kwargs": {"column": "value", "min_value": 0, "max_value": 10, "row_condition": 'channel == "a"',
                "condition_parser": "pandas"}},
    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "channel", "value_set": ["a", "b"]}},
]}


def _readings():
    rng = np.random.default_rng(3)
    n = 400
    return pd.DataFrame({"entity_id": rng.choice(["p1", "p2"], n), "channel": rng.choice(["a", "b", "c"], n),
                         "timestamp": np.arange(n, dtype=np.int64) * 1_000_000 + 1_767_571_200_000_000,
                         "value": rng.uniform(-5, 15, n)})


def test_compiled_suite_judges_rows_as_gx_checked_one(tmp_path, monkeypatch):
    monkeypatch.setenv(SUITE_CACHE_ENV, str(tmp_path))
    frame = _readings()
    for suite in [load_suite_dict(f, check=False) for f in FAMILIES] + [USER_SUITE]:
        first = SuiteValidator(suite)
        assert first.suite is not None  # built by GX
        again = SuiteValidator(suite)
        assert again.suite is None  # from the compiled form
        assert again.name == first.name and again.descriptions == first.descriptions
        assert again.gx_positions == first.gx_positions == []
        np.testing.assert_array_equal(again.failures(frame), first.failures(frame))
    assert len(list(tmp_path.glob("*.json"))) == len(FAMILIES) + 1


def test_changed_suite_or_disabled_cache_goes_through_gx(tmp_path, monkeypatch):
    monkeypatch.setenv(SUITE_CACHE_ENV, str(tmp_path))
    SuiteValidator(USER_SUITE)
    changed = json.loads(json.dumps(USER_SUITE))
    changed["expectations"][0]["kwargs"]["max_value"] = 9
    assert SuiteValidator(changed).suite is not None
    monkeypatch.setenv(SUITE_CACHE_ENV, "off")
    assert SuiteValidator(USER_SUITE).suite is not None


def test_a_run_with_a_compiled_suite_does_not_import_gx(tmp_path):
    code = ("import sys; from seqwatch.schemas.validation import SuiteValidator, load_suite_dict; "
            "SuiteValidator(load_suite_dict('sensor', check=False)); print('great_expectations' in sys.modules)")
    env = {"PATH": "/usr/bin:/bin", SUITE_CACHE_ENV: str(tmp_path), "GX_ANALYTICS_ENABLED": "false",
           "HOME": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["True", "False"]
