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
