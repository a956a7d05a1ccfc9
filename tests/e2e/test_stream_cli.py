"""``seqwatch stream`` on the DirectRunner (which plays a replay as a batch): what it says when the source ends."""
import pandas as pd

from seqwatch.models.synthetic import generate_sensor_data


def test_a_stream_that_quarantined_readings_says_so_by_reason_when_its_source_ends(small_model_dir, tmp_path,
                                                                                   wide_csv, capsys):
    """As a batch run does: the counts summed, then the quarantined readings by reason, naming the channel the
    model lacks and the --ignore that leaves its column out."""
    from seqwatch.pipelines.cli import main

    readings, _ = generate_sensor_data(n_entities=1, n_steps=120, seed=5, anomalies_per_entity=0)
    humidity = readings[readings["channel"] == "flow"].assign(channel="humidity", value=40.0)
    path = tmp_path / "pump-01.csv"
    wide_csv(pd.concat([readings, humidity], ignore_index=True), path)
    code = main(["stream", "--source", "replay", "--input", str(path), "--format", "wide", "--speed", "1000000",
                 "--model-dir", str(small_model_dir), "--output", str(tmp_path / "out"), "--runner=DirectRunner"])
    assert code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("seqwatch stream:")]
    assert lines[-2].startswith("seqwatch stream: the source ended; records in 600 = scored 480 + quarantined 120, ")
    assert lines[-1] == (f"seqwatch stream: 120 of 600 readings were quarantined (unknown_channel 120); channels the "
                         f"model lacks: 'humidity' 120; leave such columns out with --ignore (e.g. --ignore "
                         f"humidity) or the mapping's 'ignore' list; each record and its reason is in "
                         f"{tmp_path / 'out'}/quarantine")


def test_a_second_stream_into_the_same_output_counts_only_its_own_readings(small_model_dir, tmp_path, wide_csv,
                                                                          capsys):
    """A stream restarted, or another one, into a folder that already holds a stream's counts and quarantine: it
    says so when it starts, and its totals and its notice of quarantined readings when the source ends are its own
    (they had summed both streams' counts files, and named the columns of both streams' quarantine files)."""
    from seqwatch.pipelines.cli import main

    out = tmp_path / "out"
    for name, steps, extra in (("first", 120, "humidity"), ("second", 60, "rssi")):
        readings, _ = generate_sensor_data(n_entities=1, n_steps=steps, seed=5, anomalies_per_entity=0)
        unknown = readings[readings["channel"] == "flow"].assign(channel=extra, value=40.0)
        wide_csv(pd.concat([readings, unknown], ignore_index=True), tmp_path / name / "pump-01.csv")
        assert main(["stream", "--source", "replay", "--input", str(tmp_path / name), "--format", "wide", "--speed",
                     "1000000", "--model-dir", str(small_model_dir), "--output", str(out),
                     "--runner=DirectRunner"]) == 0
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("seqwatch stream:")]
        earlier = [line for line in lines if "already holds the counts" in line]
        ended = [line for line in lines if "the source ended" in line]
        assert len(ended) == 1 and f"records in {5 * steps} = scored {4 * steps} + quarantined {steps}" in ended[0]
        assert len(earlier) == (name == "second")
        assert lines[-1].startswith(f"seqwatch stream: {steps} of {5 * steps} readings were quarantined "
                                    f"(unknown_channel {steps}); channels the model lacks: '{extra}' {steps}; ")
    assert earlier[0].startswith(f"seqwatch stream: {out}/counts already holds the counts of ")
