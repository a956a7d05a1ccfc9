"""``seqwatch train``'s model shape flags, found by a bug hunt: a short ``--window`` alone was refused over a stride
nobody typed, and ``--units``/``--layers`` refusals named the config field, not the flag."""
import json

import numpy as np
import pandas as pd

from seqwatch.models.artifact import read_metadata
from seqwatch.pipelines.cli import _new_config, build_parser


def _config(*flags):
    return _new_config(build_parser().parse_args(["train", "--input", "x.csv", "--model-dir", "m", *flags]))


def test_the_default_stride_is_at_most_the_window():
    assert _config().window.stride == 16 and _config().window.length == 64  # the defaults as they were
    assert _config("--window", "8").window.stride == 8
    assert _config("--window", "12").window.stride == 12
    assert _config("--window", "32").window.stride == 16
    assert _config("--window", "8", "--stride", "2").window.stride == 2  # a stride given is the stride


def test_shape_flags_are_refused_by_their_flag_names(tmp_path, cli_cases):
    rng = np.random.default_rng(0)
    t = np.arange(600)
    frame = pd.concat([pd.DataFrame({"entity_id": "e1", "channel": c, "timestamp": pd.to_datetime(
        1_767_225_600 + 60 * t, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "value": np.sin(t / (10 + 3 * i)) + rng.normal(0, 0.05, len(t))}) for i, c in enumerate("ab")])
    frame.to_csv(tmp_path / "history.csv", index=False)
    base = ["train", "--input", str(tmp_path / "history.csv"), "--format", "long", "--epochs", "1"]
    cases = [
        (["--units", "0"], "seqwatch train: --units must be > 0, got 0"),
        (["--layers", "4"], "seqwatch train: --layers must be 1, 2 or 3, got 4"),
        (["--window", "8", "--stride", "9"], "seqwatch train: --stride must be in [1, length=8], got 9"),
        (["--window", "1"], "seqwatch train: --window must be >= 2, got 1"),
        (["--channel", "a", "--channel", "a"],  # bug hunt of variants: it had refused for "0 windows"
         "seqwatch train: --channel a is given more than once; name each channel to model once"),
        # bug hunt of training (2026-12-03): taken without a word, though it sets nothing without forecasts
        (["--coverage", "0.99"], "seqwatch train: --coverage sets the coverage of the forecast intervals, and this "
                                 "model forecasts nothing (a forecast horizon of 0); give --horizon STEPS too, or "
                                 "leave --coverage out"),
        (["--window", "8", "--units", "4"], None),  # trains, with stride 8
    ]
    results = cli_cases([base + flags + ["--model-dir", str(tmp_path / f"m{i}")]
                         for i, (flags, _) in enumerate(cases)])
    for i, ((flags, message), (code, stderr)) in enumerate(zip(cases, results, strict=True)):
        if message is None:
            assert code == 0, (flags, stderr[-3000:])
            window = read_metadata(tmp_path / f"m{i}")["config"]["window"]
            assert (window["length"], window["stride"]) == (8, 8)
            continue
        assert code == 2, (flags, stderr[-3000:])
        assert stderr.strip() == message, (flags, stderr[-3000:])
        assert not (tmp_path / f"m{i}").exists()


def test_ignore_leaves_a_channel_of_a_long_file_out_of_training_as_the_constant_channel_note_advises(tmp_path,
                                                                                                     cli_cases):
    """Found by a bug hunt: on long data the note's advice (--ignore b) changed nothing: a long file has no column
    b, and the model kept the constant channel, with the same note again."""
    t = np.arange(600)
    times = pd.to_datetime(1_767_225_600 + 60 * t, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ")
    frame = pd.concat([pd.DataFrame({"entity_id": "e1", "channel": "a", "timestamp": times, "value": np.sin(t / 10)}),
                       pd.DataFrame({"entity_id": "e1", "channel": "b", "timestamp": times, "value": 5.0})])
    frame.to_csv(tmp_path / "history.csv", index=False)
    base = ["train", "--input", str(tmp_path / "history.csv"), "--window", "8", "--units", "4", "--epochs", "1"]
    (code, before), (code_ignored, after) = cli_cases([base + ["--model-dir", str(tmp_path / "m")],
                                                       base + ["--model-dir", str(tmp_path / "m-ignored"),
                                                               "--ignore", "b"]])
    assert code == code_ignored == 0, (before[-2000:], after[-2000:])
    note = "note: channel 'b' held one value throughout the training readings"
    assert note in before and "or leave it out (--ignore b)" in before
    assert read_metadata(tmp_path / "m")["channels"] == ["a", "b"]
    assert note not in after and "seqwatch train: left out 600 readings of the ignored channel(s) ['b']" in after
    assert read_metadata(tmp_path / "m-ignored")["channels"] == ["a"]


def test_a_model_keeps_its_suites_bounds_and_a_fine_tuning_notes_the_channels_it_leaves_out(tmp_path, cli_cases):
    """Found by bug hunts: a run's power forecasts reached below 0 W (the energy suite quarantines such a reading),
    and a fine-tuning on files with a channel the model lacks left its readings out without a word."""
    import pyarrow.dataset as ds

    t = np.arange(2400)
    rng = np.random.default_rng(3)
    on = (t % 45) < 20  # a fridge: 20 minutes on at about 120 W, 25 off at 0-1 W
    wide = pd.DataFrame({"timestamp": pd.to_datetime(1_767_225_600 + 60 * t, unit="s", utc=True).strftime(
        "%Y-%m-%dT%H:%M:%SZ"), "active_power": np.where(on, 120 + rng.normal(0, 8, len(t)), rng.uniform(0, 1, len(t))),
        "voltage": 230 + rng.normal(0, 1, len(t)), "door_sensor": rng.normal(0, 1, len(t))})
    wide.iloc[:1200].to_csv(tmp_path / "fridge.csv", index=False)
    wide.iloc[1200:].to_csv(tmp_path / "later.csv", index=False)
    common = ["--format", "wide", "--entity", "fridge", "--suite", "energy"]
    model, tuned = tmp_path / "model" / "v1", tmp_path / "model" / "v2"
    (trained, train_err), (run, run_err), (fine, fine_err) = cli_cases([
        ["train", "--input", str(tmp_path / "fridge.csv"), *common, "--ignore", "door_sensor", "--model-dir",
         str(model), "--window", "16", "--units", "4", "--horizon", "4", "--epochs", "1"],
        ["run", "--input", str(tmp_path / "later.csv"), *common, "--ignore", "door_sensor", "--model-dir", str(model),
         "--output", str(tmp_path / "out")],
        ["train", "--warm-start", str(model), "--input", str(tmp_path / "later.csv"), *common, "--model-dir",
         str(tuned), "--epochs", "1"],
    ])
    assert trained == run == fine == 0, (train_err[-2000:], run_err[-2000:], fine_err[-2000:])
    assert read_metadata(model)["value_bounds"] == {"active_power": [0.0, 1e7], "voltage": [0.0, 1000.0]}
    forecasts = ds.dataset(tmp_path / "out" / "forecasts").to_table().to_pandas()
    power = forecasts[forecasts["channel"] == "active_power"]
    assert len(power) and power["yhat_lower"].min() == 0.0 and power["yhat"].min() >= 0  # one epoch: wide intervals
    assert ("seqwatch train: note: 1200 readings of the training input's channel ['door_sensor'] are left out: a "
            "fine-tuning keeps the model's channels ['active_power', 'voltage']") in fine_err
    assert "door_sensor" not in train_err  # --ignore was asked for: no note
    assert read_metadata(tuned)["value_bounds"] == read_metadata(model)["value_bounds"]
    # The bug hunt of forecasts: a fine-tuning without --suite had taken the default sensor suite's bounds (power
    # forecasts below 0 W); it now takes the suite the model was trained with, and a model saved before that was
    # kept keeps its own bounds
    assert read_metadata(model)["training_suite"] == "energy"
    bare = ["--format", "wide", "--entity", "fridge", "--epochs", "1"]
    older = tmp_path / "older"
    import shutil
    shutil.copytree(model, older)
    metadata = json.loads((older / "metadata.json").read_text())
    del metadata["training_suite"]
    (older / "metadata.json").write_text(json.dumps(metadata))
    (kept, kept_err), (old, old_err) = cli_cases([
        ["train", "--warm-start", str(model), "--input", str(tmp_path / "later.csv"), *bare, "--model-dir",
         str(tmp_path / "model" / "v3")],
        ["train", "--warm-start", str(older), "--input", str(tmp_path / "later.csv"), *bare, "--model-dir",
         str(tmp_path / "older-v2")],
    ])
    assert kept == old == 0, (kept_err[-2000:], old_err[-2000:])
    assert "seqwatch train: fine-tuning with the suite the model was trained with: energy" in kept_err
    assert read_metadata(tmp_path / "model" / "v3")["value_bounds"] == read_metadata(model)["value_bounds"]
    assert read_metadata(tmp_path / "model" / "v3")["training_suite"] == "energy"
    assert read_metadata(tmp_path / "older-v2")["value_bounds"] == read_metadata(model)["value_bounds"]
    # (the review: it had recorded the default suite it judged by, whose bounds the next fine-tuning then took)
    assert "training_suite" not in read_metadata(tmp_path / "older-v2")


def test_fine_tunings_that_would_save_a_useless_version_are_refused_and_an_unknown_ignore_is_noted(tmp_path,
                                                                                                   cli_cases):
    """Found by the bug hunt of training (2026-12-03): a fine-tuning on an idle week saved a threshold of 0 without a
    word, and the root's newest version then alerted on every normal window; one whose readings all lay inside the
    alerts of --exclude-alerts said only "the fine-tuning data hold no readings"; and an --ignore with a typo of
    the channel a note advised leaving out trained on with it, without a word."""
    def readings(start, n, idle=False, level=0.0, seed=0):
        rng = np.random.default_rng(seed)
        t = np.arange(n)
        stamps = pd.date_range(start, periods=n, freq="60s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
        flow = np.zeros(n) if idle else level + 10 + 2 * np.sin(2 * np.pi * t / 60) + rng.normal(0, 0.1, n)
        temp = np.full(n, 21.0) if idle else 50 + np.sin(2 * np.pi * t / 120) + rng.normal(0, 0.1, n)
        return pd.concat([pd.DataFrame({"entity_id": "p1", "channel": c, "timestamp": stamps, "value": v})
                          for c, v in (("flow", flow), ("temp", temp))])

    readings("2026-01-01", 2000, seed=1).to_csv(tmp_path / "history.csv", index=False)
    readings("2026-01-10", 1200, idle=True).to_csv(tmp_path / "idle.csv", index=False)
    readings("2026-01-12", 1200, level=40.0, seed=2).to_csv(tmp_path / "shifted.csv", index=False)
    root = tmp_path / "root"
    results = cli_cases([
        ["train", "--input", str(tmp_path / "history.csv"), "--model-dir", str(root / "v1"), "--window", "16",
         "--units", "4", "--epochs", "1", "--ignore", "tmep"],
        ["train", "--warm-start", str(root), "--input", str(tmp_path / "idle.csv"), "--model-dir", str(root / "v2"),
         "--epochs", "1"],
        ["run", "--input", str(tmp_path / "shifted.csv"), "--model-dir", str(root), "--output", str(tmp_path / "out")],
        ["train", "--warm-start", str(root), "--input", str(tmp_path / "shifted.csv"), "--model-dir",
         str(root / "v3"), "--exclude-alerts", str(tmp_path / "out"), "--epochs", "1"],
    ])
    (trained, train_err), (idle, idle_err), (run, run_err), (excluded, excluded_err) = results
    assert (trained, idle, run, excluded) == (0, 2, 0, 2), [err[-1500:] for _, err in results]
    assert ("seqwatch train: note: the ignored name 'tmep' (did you mean 'temp'?) is no column or channel of the "
            "training input, so it leaves nothing out") in train_err
    assert read_metadata(root / "v1")["channels"] == ["flow", "temp"]
    assert idle_err.strip().splitlines()[-1].startswith("seqwatch train: the fine-tuned version was not saved: the "
                                                        "threshold is ")
    assert idle_err.strip().endswith(f"the model of --warm-start {root} is as it was")
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["v1"]
    scores = pd.read_parquet(tmp_path / "out" / "scores")
    assert scores["is_anomaly"].all()  # the shifted level alerts on every window
    assert excluded_err.strip().splitlines()[-1] == (
        "seqwatch train: all 2400 readings of the fine-tuning input lie inside the alerts of the runs given with "
        "--exclude-alerts, so none is left to fine-tune on: give readings from outside those alerts, or, if they "
        "show the equipment's new normal, fine-tune on them without --exclude-alerts")


def test_an_ignored_column_of_a_long_file_is_no_unknown_name(tmp_path, cli_cases):
    """A review of the note on ignored names: a long file's --ignore names a column besides the four (a unit column,
    without which the file is refused) as well as channels; the note had called such a column unknown."""
    t = np.arange(600)
    times = pd.to_datetime(1_767_225_600 + 60 * t, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ")
    frame = pd.concat([pd.DataFrame({"entity_id": "e1", "channel": c, "timestamp": times,
                                     "value": np.sin(t / (10 + i)), "unit": "bar"}) for i, c in enumerate("ab")])
    frame.to_csv(tmp_path / "history.csv", index=False)
    base = ["train", "--input", str(tmp_path / "history.csv"), "--window", "8", "--units", "4", "--epochs", "1"]
    (code, stderr), (typo_code, typo) = cli_cases([base + ["--model-dir", str(tmp_path / "m"), "--ignore", "unit"],
                                                   base + ["--model-dir", str(tmp_path / "m2"), "--ignore", "unit",
                                                           "--ignore", "uint"]])
    assert code == typo_code == 0, (stderr[-2000:], typo[-2000:])
    assert "ignored name" not in stderr
    assert ("seqwatch train: note: the ignored name 'uint' (did you mean 'unit'?) is no column or channel of the "
            "training input, so it leaves nothing out") in typo


def test_a_user_suites_rule_that_judges_none_of_the_models_channels_is_noted(tmp_path, cli_cases):
    """Bug hunt of user suites: a rule whose row condition names a channel the data lack (a typo, "presure") was
    accepted and enforced nothing, without a word."""
    from seqwatch.schemas.validation import rules_for_no_channel

    def rule(condition):
        return {"type": "expect_column_values_to_be_between", "kwargs": {
            "column": "value", "max_value": 100, "row_condition": condition, "condition_parser": "pandas"}}

    suite = {"name": "mine", "expectations": [rule('channel == "presure"'), rule('channel == "flow"'),
                                              rule('entity_id == "p9"'), rule('channel.str.startswith("x")')]}
    assert rules_for_no_channel(suite, ["flow", "pressure"]) == [
        'expect_column_values_to_be_between(value) where channel == "presure"',
        'expect_column_values_to_be_between(value) where channel.str.startswith("x")']
    assert rules_for_no_channel(suite, ["flow", "presure", "x1"]) == []
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(suite))
    t = np.arange(1500)
    rng = np.random.default_rng(1)
    pd.DataFrame({"timestamp": pd.to_datetime(1_767_225_600 + 10 * t, unit="s", utc=True).strftime(
        "%Y-%m-%dT%H:%M:%SZ"), "flow": 50 + rng.normal(0, 1, len(t)), "pressure": 5 + rng.normal(0, .1, len(t))}
    ).to_csv(tmp_path / "p1.csv", index=False)
    common = ["train", "--input", str(tmp_path / "p1.csv"), "--format", "wide", "--window", "16", "--units", "4",
              "--epochs", "1"]
    (mine, mine_err), (bundled, bundled_err) = cli_cases([
        [*common, "--suite", str(path), "--model-dir", str(tmp_path / "m")],
        [*common, "--model-dir", str(tmp_path / "m2")]])
    assert mine == bundled == 0, (mine_err[-2000:], bundled_err[-2000:])
    assert (f"seqwatch train: note: 2 rule(s) of suite {path} judge none of the model's channels ['flow', "
            f"'pressure'] (first: expect_column_values_to_be_between(value) where channel == \"presure\"): a channel "
            f"name misspelt in a row condition?") in mine_err
    assert "judge none of the model's channels" not in bundled_err  # the bundled suites cover every kind
