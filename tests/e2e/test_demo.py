"""``seqwatch demo`` end to end (the quick variant): data generated, a model trained, the batch pipeline run,
and the report printed from the Parquet outputs; with ``--online-calibration`` the run records the setting."""
import json
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quick_demo_with_online_calibration_reports_what_it_found(tmp_path, capsys):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "demo", "--quick", "--output", str(out),
                             "--online-calibration"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "results" / "manifest.json").read_text())
    assert manifest["settings"]["online_calibration"] is True
    records = re.search(r"records in (\d+) = scored (\d+) \+ quarantined (\d+)", result.stdout)
    assert records and int(records[1]) == int(records[2]) + int(records[3]) == manifest["records_in"]
    found = re.search(r"injected anomalies found: (\d+)/(\d+)", result.stdout)
    assert found and int(found[2]) == 12 and int(found[1]) >= 1  # 4 pumps x 3 injected anomalies
    assert "(online calibration per entity)" in result.stdout
    # The README walkthrough (2026-12-03): the demo says where its data are and the run to try next, which works.
    following = re.search(r"next: +seqwatch (run .*)$", result.stdout, re.MULTILINE)
    assert following and f"--input '{out / 'data' / 'live'}'" in following[1]
    assert re.search(rf"data: +{re.escape(str(out / 'data' / 'train'))} ", result.stdout)
    from seqwatch.pipelines.cli import main
    argv = following[1].replace("'", "").replace("my-output", str(tmp_path / "mine")).split()
    assert main(argv) == 0
    assert json.loads((tmp_path / "mine" / "manifest.json").read_text())["records_in"] == manifest["records_in"]
    # The evaluation it offers holds the run against the injected anomalies (its labels file) and finds what the
    # demo's report found.
    offered = re.search(r"evaluate: +seqwatch (evaluate .*)$", result.stdout, re.MULTILINE)
    capsys.readouterr()  # what the run above printed
    assert offered and main(offered[1].split()) == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert (evaluation["found"], evaluation["incidents"]) == (int(found[1]), int(found[2]))
