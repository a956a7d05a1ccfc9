"""``seqwatch train``'s model shape flags, found by a bug hunt: a short ``--window`` alone was refused over a stride
nobody typed, and ``--units``/``--layers`` refusals named the config field, not the flag."""
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
