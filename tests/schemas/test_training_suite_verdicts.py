"""``seqwatch train`` leaves out the training readings its suite fails, as a run quarantines them. When a suite
failed every reading of a channel (the sensor suite's "press" rule took compressor_speed for a pressure), the
channel vanished from the model with only a note on the share of all readings that failed. Training now names
such a channel and the rule that removed it, and refuses when it is a channel to model (``--channel``)."""
import json

import numpy as np
import pandas as pd
import pytest

from seqwatch.pipelines.cli import CliError, _read_training_frame, build_parser

SPEED_RULE = ('expect_column_values_to_be_between(value, max_value=1000.0) where channel.str.contains("speed", '
              'case=False, regex=True)')


@pytest.fixture
def history(tmp_path):
    """Two wide files of flow and compressor_speed (rpm near 3,000), and a suite bounding speeds at 1,000."""
    stamps = pd.date_range("2026-01-01", periods=200, freq="10s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    rng = np.random.default_rng(5)
    for name in ("c0", "c1"):
        (tmp_path / "in").mkdir(exist_ok=True)
        pd.DataFrame({"timestamp": stamps, "flow": rng.normal(50, 1, 200),
                      "compressor_speed": rng.normal(3000, 20, 200)}).to_csv(tmp_path / "in" / f"{name}.csv",
                                                                              index=False)
    suite = tmp_path / "speeds.json"
    suite.write_text(json.dumps({"name": "speeds", "expectations": [
        {"type": "expect_column_values_to_be_between",
         "kwargs": {"column": "value", "max_value": 1000, "row_condition": 'channel.str.contains("speed", '
                    'case=False, regex=True)', "condition_parser": "pandas"}}]}))
    return tmp_path


def _args(folder, *extra):
    return build_parser().parse_args(["train", "--input", str(folder / "in"), "--format", "wide", "--model-dir",
                                      str(folder / "model"), "--suite", str(folder / "speeds.json"), *extra])


def training_value(folder) -> float:
    """The first compressor speed of the first file: the first reading the suite fails."""
    return float(pd.read_csv(folder / "in" / "c0.csv")["compressor_speed"].iloc[0])


def test_a_channel_the_suite_fails_throughout_is_named_with_its_rule(history, capsys):
    args = _args(history)
    training = _read_training_frame(args, channels=tuple(args.channel or ()))
    assert set(training.frame["channel"].astype(str)) == {"flow"}
    notes = [line for line in capsys.readouterr().err.splitlines() if "none of the" in line]
    assert notes == [
        "seqwatch train: note: none of the training input's readings of the channel(s) ['compressor_speed'] pass "
        "validation with suite 'speeds' ('compressor_speed': expectation_failed 400; the first expectation_failed: "
        f"channel 'compressor_speed' value {training_value(history)!r} failed {SPEED_RULE}): the model leaves them "
        "out, and runs will quarantine their readings as unknown_channel; if such readings are normal for this "
        "equipment, train and run with a suite that allows them (--suite)"]


def test_a_channel_to_model_that_the_suite_fails_throughout_is_refused(history):
    args = _args(history, "--channel", "flow", "--channel", "compressor_speed")
    with pytest.raises(CliError) as caught:
        _read_training_frame(args, channels=tuple(args.channel))
    message = str(caught.value)
    assert message.startswith("none of the training input's readings of the channel(s) ['compressor_speed'] to "
                              "model pass validation with suite 'speeds' ('compressor_speed': expectation_failed 400")
    assert SPEED_RULE in message and "\n" not in message


def test_channels_with_some_valid_readings_are_kept_without_the_note(history, capsys):
    frame = pd.read_csv(history / "in" / "c1.csv")
    frame.loc[:99, "compressor_speed"] = 900.0  # half of one file's speeds pass
    frame.to_csv(history / "in" / "c1.csv", index=False)
    args = _args(history)
    training = _read_training_frame(args, channels=())
    assert set(training.frame["channel"].astype(str)) == {"flow", "compressor_speed"}
    assert "none of the" not in capsys.readouterr().err
