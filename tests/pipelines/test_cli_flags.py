"""How the CLI reads its flags: format flags beside a ``--mapping`` file, flags passed on to Beam, and the line a
run prints about what it quarantined. Found by hand: ``--mapping eu.json --format wide`` (a file that only set
``sep``) read the files as long, because the mapping file replaced every flag; ``--alert-cooldwn 60`` went to
Beam, which dropped it, and the run went on without a cooldown; and a run of European decimal commas quarantined
all 6,004 readings and printed only its counts."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqwatch.pipelines.cli import CliError, _check_beam_flags, _mapping_from_args, build_parser, quarantine_notice
from seqwatch.schemas.arrow import SCHEMAS_BY_SINK
from seqwatch.schemas.mapping import InputMapping


def _mapping(tmp_path, *flags, mapping_file: dict | None = None) -> InputMapping:
    argv = ["run", "--input", "x.csv", "--output", "o", "--model-dir", "m", *flags]
    if mapping_file is not None:
        path = tmp_path / "mapping.json"
        path.write_text(json.dumps(mapping_file))
        argv += ["--mapping", str(path)]
    args, _ = build_parser().parse_known_args(argv)
    return _mapping_from_args(args)


def test_without_a_mapping_file_the_flags_are_the_mapping(tmp_path):
    assert _mapping(tmp_path) == InputMapping()
    wide = _mapping(tmp_path, "--format", "wide", "--timestamp-column", "time", "--entity", "pump-7", "--sep", ";",
                    "--timezone", "Europe/Berlin", "--ignore", "label")
    assert wide == InputMapping(format="wide", timestamp="time", entity={"value": "pump-7"}, sep=";",
                                timezone="Europe/Berlin", ignore=("label",))


def test_flags_set_what_the_mapping_file_leaves_out(tmp_path):
    mapping = _mapping(tmp_path, "--format", "wide", "--ignore", "label", "--ignore", "note",
                       mapping_file={"sep": ";", "decimal": ",", "ignore": ["note"]})
    assert (mapping.format, mapping.sep, mapping.decimal) == ("wide", ";", ",")
    assert mapping.ignore == ("note", "label")  # the file's, then the flags' new ones
    assert mapping.timestamp == "timestamp" and mapping.timezone == "UTC"  # neither says: the defaults


def test_a_flag_that_repeats_the_mapping_file_is_fine(tmp_path):
    mapping = _mapping(tmp_path, "--format", "wide", mapping_file={"format": "wide", "entity": {"column": "site"}})
    assert mapping.entity == {"column": "site"}


@pytest.mark.parametrize("flags, file, message", [
    (("--format", "wide"), {"format": "long"}, "sets format 'long' but --format says 'wide'"),
    (("--sep", ","), {"sep": ";"}, "sets sep ';' but --sep says ','"),
    (("--entity", "p1"), {"format": "wide", "entity": {"column": "site"}}, "--entity-column, --entity, --entity-topic-level or --entity-from-key says"),
    (("--timestamp-column", "t"), {"format": "wide", "timestamp": "time"}, "--timestamp-column says 't'"),
])
def test_a_flag_that_contradicts_the_mapping_file_is_one_sentence(tmp_path, flags, file, message):
    with pytest.raises(CliError, match="give one of them") as caught:
        _mapping(tmp_path, *flags, mapping_file=file)
    assert message in str(caught.value)


def test_wide_only_flags_on_a_long_input_are_refused(tmp_path):
    # `seqwatch run --entity pump-7` on a long file: the flag was dropped without a word.
    with pytest.raises(CliError, match=r"^--entity is for --format wide; a long file's rows name their entity and "
                                       r"time in its entity_id and timestamp columns$"):
        _mapping(tmp_path, "--entity", "pump-7")
    with pytest.raises(CliError, match=r"^--timestamp-column and --entity-column are for --format wide; "):
        _mapping(tmp_path, "--format", "long", "--timestamp-column", "t", "--entity-column", "site")


def test_entity_column_and_entity_together_are_refused(tmp_path):
    with pytest.raises(CliError, match="--entity-column and --entity both say"):
        _mapping(tmp_path, "--format", "wide", "--entity-column", "site", "--entity", "p1")


def _manifest(records_in, scored, **quarantined):
    return {"records_in": records_in, "records_scored": scored, "records_quarantined": sum(quarantined.values()),
            "stages": {"records_in": records_in, "alerts": 0,
                       **{f"quarantined.{key.replace('__', '.')}": n for key, n in quarantined.items()}}}


def test_the_notice_counts_quarantined_readings_by_reason_commonest_first(tmp_path):
    manifest = _manifest(100, 90, parse__parse_value=2, window__duplicate=3, validate__unknown_channel=3,
                         window__duplicate_again=2)
    notice = quarantine_notice("run", manifest, str(tmp_path))
    assert notice == (f"seqwatch run: 10 of 100 readings were quarantined (duplicate 3, unknown_channel 3, "
                      f"duplicate_again 2, parse_value 2); each record and its reason is in {tmp_path}/quarantine")
    assert quarantine_notice("run", _manifest(100, 100), str(tmp_path)) is None


def test_when_nothing_was_scored_the_notice_quotes_the_first_reason_of_the_commonest_code(tmp_path):
    schema = SCHEMAS_BY_SINK["quarantine"]
    rows = [{"raw": "2026-01-05T00:00:00Z;95,75", "source": "eu.csv", "line": line, "column": "flow", "records": 1,
             "stage": "parse", "reason_code": code, "reason": reason, "run_id": "r"}
            for line, code, reason in [(2, "malformed_row", "the row has 2 fields, the header 5"),
                                       (3, "parse_value", "the value '95,75' uses a decimal comma; set the "
                                                          "mapping's decimal to ','"),
                                       (4, "parse_value", "the value '96,1' uses a decimal comma")]]
    (tmp_path / "quarantine").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "quarantine" / "eu.parquet")
    notice = quarantine_notice("run", _manifest(3, 0, parse__parse_value=2, parse__malformed_row=1), str(tmp_path))
    assert notice.startswith("seqwatch run: nothing was scored: all 3 readings were quarantined (parse_value 2, "
                             "malformed_row 1); values that are not numbers, by channel: 'flow' 2; the first "
                             "parse_value: the value '95,75' uses a decimal comma; set the mapping's decimal to ','; "
                             "each record")


def test_the_notice_names_a_column_of_text_and_the_ignore_that_leaves_it_out(tmp_path):
    """A wide file with a text status column: each of its cells is quarantined as not a number. One stray bad
    cell of a channel gets no such hint."""
    schema = SCHEMAS_BY_SINK["quarantine"]
    rows = [{"raw": "", "source": "p.csv", "line": line, "column": column, "records": 1, "stage": "parse",
             "reason_code": "parse_value", "reason": "", "run_id": "r"}
            for line, column in [(n, "status") for n in range(2, 42)] + [(7, "flow")]]
    (tmp_path / "quarantine").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "quarantine" / "p.parquet")
    wide = {"settings": {"mapping": {"format": "wide"}}}
    notice = quarantine_notice("run", {**_manifest(200, 159, parse__parse_value=41), **wide}, str(tmp_path))
    assert notice == (f"seqwatch run: 41 of 200 readings were quarantined (parse_value 41); values that are not "
                      f"numbers, by column: 'status' 40, 'flow' 1; a column of text, not readings, is left out with "
                      f"--ignore (e.g. --ignore status); each record and its reason is in {tmp_path}/quarantine")
    (tmp_path / "quarantine" / "p.parquet").unlink()
    pq.write_table(pa.Table.from_pylist(rows[-1:], schema=schema), tmp_path / "quarantine" / "p.parquet")
    notice = quarantine_notice("run", {**_manifest(200, 199, parse__parse_value=1), **wide}, str(tmp_path))
    assert "values that are not numbers, by column: 'flow' 1; each record" in notice


def test_two_text_columns_of_the_same_size_both_get_the_ignore_hint(tmp_path):
    """Found by a bug hunt: with two text columns of 20 cells each neither held most of the records, so neither got
    the hint. Now a column that is not one of the model's channels gets it; a channel's stray cell does not."""
    schema = SCHEMAS_BY_SINK["quarantine"]
    rows = [{"raw": "", "source": "p.csv", "line": line, "column": column, "records": 1, "stage": "parse",
             "reason_code": "parse_value", "reason": "", "run_id": "r"}
            for line, column in [(n, c) for n in range(2, 22) for c in ("status", "mode")] + [(7, "flow")]]
    (tmp_path / "quarantine").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "quarantine" / "p.parquet")
    manifest = {**_manifest(200, 159, parse__parse_value=41), "settings": {"mapping": {"format": "wide"}},
                "model": {"channels": ["flow", "pressure"]}}
    assert quarantine_notice("run", manifest, str(tmp_path)) == (
        f"seqwatch run: 41 of 200 readings were quarantined (parse_value 41); values that are not numbers, by "
        f"column: 'mode' 20, 'status' 20, 'flow' 1; a column of text, not readings, is left out with --ignore (e.g. "
        f"--ignore mode --ignore status); each record and its reason is in {tmp_path}/quarantine")
    # A column the mapping renames to a model channel is that channel: no hint to leave it out (from a review).
    renamed = {**manifest, "settings": {"mapping": {"format": "wide", "channels": {"mode": "flow", "status": "x"}}}}
    assert "(e.g. --ignore status)" in quarantine_notice("run", renamed, str(tmp_path))


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_empty_and_missing_values_are_counted_apart_from_text_and_get_no_ignore_hint(tmp_path, layout):
    """A channel read less often than the others leaves a wide file's cells empty between its readings: they are
    not text to leave out with --ignore. 'NaN' and 'null' texts are missing values too; a text column still gets
    its hint (wide)."""
    from seqwatch.pipelines.parsing import explain_value
    schema = SCHEMAS_BY_SINK["quarantine"]
    cells = ([(n, "temperature", "") for n in range(2, 32)] + [(40, "temperature", "NaN"), (41, "flow", "null")]
             + [(n, "status", "running") for n in range(2, 22)])
    rows = [{"raw": "", "source": "p.csv", "line": line, "column": column, "records": 1, "stage": "parse",
             "reason_code": "parse_value", "reason": f"column {column!r}: {explain_value(text)}", "run_id": "r"}
            for line, column, text in cells]
    (tmp_path / "quarantine").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "quarantine" / "p.parquet")
    manifest = {**_manifest(400, 348, parse__parse_value=52), "settings": {"mapping": {"format": layout}}}
    by = "column" if layout == "wide" else "channel"
    text_hint = "; a column of text, not readings, is left out with --ignore (e.g. --ignore status)"
    empty_note = " (a wide file's empty cell is counted as a reading that did not come)"
    assert quarantine_notice("run", manifest, str(tmp_path)) == (
        f"seqwatch run: 52 of 400 readings were quarantined (parse_value 52); values that are not numbers, by {by}: "
        f"'status' 20{text_hint if layout == 'wide' else ''}; empty or missing values, by {by}: 'temperature' 31, "
        f"'flow' 1{empty_note if layout == 'wide' else ''}; each record and its reason is in {tmp_path}/quarantine")


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_the_notice_names_the_channels_the_model_lacks_and_for_wide_files_how_to_leave_them_out(tmp_path, layout):
    schema = SCHEMAS_BY_SINK["quarantine"]
    rows = [{"raw": "", "source": "p.csv", "line": line, "column": column, "records": 1, "stage": "validate",
             "reason_code": code, "reason": "", "run_id": "r"}
            for line, column, code in [(2, "rpm", "unknown_channel"), (2, "humidity", "unknown_channel"),
                                       (3, "humidity", "unknown_channel"), (3, "flow", "expectation_failed"),
                                       (4, "humidity", "unknown_channel")]]
    (tmp_path / "quarantine").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "quarantine" / "p.parquet")
    manifest = {**_manifest(20, 15, validate__unknown_channel=4, validate__expectation_failed=1),
                "settings": {"mapping": {"format": layout}}}
    hint = "; leave such columns out with --ignore (e.g. --ignore humidity) or the mapping's 'ignore' list"
    assert quarantine_notice("run", manifest, str(tmp_path)) == (
        f"seqwatch run: 5 of 20 readings were quarantined (unknown_channel 4, expectation_failed 1); channels the "
        f"model lacks: 'humidity' 3, 'rpm' 1{hint if layout == 'wide' else ''}; each record and its reason is in "
        f"{tmp_path}/quarantine")


@pytest.mark.parametrize("extra, message", [
    (["--alert-cooldwn", "60"], "unknown flag --alert-cooldwn: neither seqwatch run nor Beam takes it; did you mean "
                                "--alert-cooldown?"),
    (["--direct_num_worker=2"], "unknown flag --direct_num_worker: neither seqwatch run nor Beam takes it; did you "
                                "mean --direct_num_workers?"),
    (["--zzz"], "unknown flag --zzz: neither seqwatch run nor Beam takes it (seqwatch run --help lists its flags)"),
    (["stray"], "unexpected argument 'stray' (flags take the form --name value)"),
    (["--direct_running_mode=fast"], "Beam option argument --direct_running_mode: invalid choice: 'fast'"),
    # a Flink option of Beam's Java SDK, which a Flink user reaches for first (session 51)
    (["--runner=FlinkRunner", "--checkpointing_interval=10000"],
     "unknown flag --checkpointing_interval: Flink's runner takes it in Beam's Java SDK, not in Python's, whose "
     "FlinkRunner passes it on to an uber jar only; seqwatch's Flink jobs run without Flink checkpoints"),
])
def test_a_flag_neither_seqwatch_nor_beam_takes_is_one_sentence(extra, message):
    parser = build_parser()
    _, beam_args = parser.parse_known_args(["run", "--input", "x", "--output", "o", "--model-dir", "m", *extra])
    with pytest.raises(CliError) as caught:
        _check_beam_flags("run", parser, beam_args)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("extra", [
    [], ["--runner=DirectRunner", "--direct_num_workers", "2", "--direct_running_mode=multi_processing"],
    ["--runner=PrismRunner", "--prism_location=.tools/bin/prism", "--experiments=a", "--experiments=b"],
    ["--runner=FlinkRunner", "--flink_master=[local]", "--environment_type=LOOPBACK", "--parallelism=2"],
    ["--runner=DataflowRunner", "--project=p", "--region=europe-west1", "--temp_location=gs://b/tmp",
     "--setup_file=./setup.py", "--max_num_workers", "4"],
    ["--runner=apache_beam.runners.my_company.OurRunner", "--our_option=1"],  # options Beam cannot know yet
])
def test_flags_beam_takes_pass(extra):
    parser = build_parser()
    _, beam_args = parser.parse_known_args(["stream", "--source", "replay", "--input", "x", "--output", "o",
                                            "--model-dir", "m", *extra])
    _check_beam_flags("stream", parser, beam_args)


@pytest.mark.parametrize("argv, message", [
    (["--source", "kafka", "--bootstrap-servers", "127.0.0.1:9", "--topic", "t", "--format", "wide",
      "--entity-topic-level", "1"],
     "the entity from a topic level (--entity-topic-level, or the mapping's from_topic) is for MQTT messages; "
     "--source kafka has no topic per message"),
    (["--source", "mqtt", "--mqtt-broker", "127.0.0.1:9", "--topic", "p/+/s", "--entity-topic-level", "1"],
     "--entity-topic-level and --entity-from-key read the entity of a device's state message (--format wide); a "
     "long message names its entity in its entity_id field"),
    (["--source", "mqtt", "--mqtt-broker", "127.0.0.1:9", "--topic", "p/+/s", "--format", "wide",
      "--entity-from-key"],
     "the entity from the message key (--entity-from-key, or the mapping's from_key) is for Kafka messages; "
     "--source mqtt has no message key"),
    (["--source", "kafka", "--bootstrap-servers", "127.0.0.1:9", "--topic", "t", "--format", "wide",
      "--entity-from-key", "--entity", "pump-01"],
     "--entity and --entity-from-key both say where the entity comes from: give one of them"),
    (["--source", "mqtt", "--mqtt-broker", "127.0.0.1:9", "--topic", "p/+/s", "--format", "wide",
      "--entity-column", "device", "--entity-topic-level", "1"],
     "--entity-column and --entity-topic-level both say where the entity comes from: give one of them"),
])
def test_an_entity_from_a_topic_level_is_refused_where_there_is_no_topic_or_no_wide_message(tmp_path, capsys, argv,
                                                                                           message):
    from seqwatch.pipelines.cli import main
    assert main(["stream", *argv, "--model-dir", str(tmp_path / "m"), "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"seqwatch stream: {message}"


def test_calibration_keep_days_reaches_the_run_config_and_is_refused_in_one_sentence_where_it_cannot_apply():
    from seqwatch.pipelines.cli import _run_config

    def config(*flags):
        args, _ = build_parser().parse_known_args(["run", "--input", "x.csv", "--output", "o", "--model-dir", "m",
                                                   *flags])
        return _run_config(args)

    assert config("--online-calibration", "--calibration-keep-days", "30").calibration_keep_days == 30
    assert config("--online-calibration").calibration_keep_days == 0  # for ever, and no setting in the run id
    assert "calibration_keep_days" not in config("--online-calibration").settings()
    assert config("--online-calibration", "--calibration-keep-days", "0.5").settings()["calibration_keep_days"] == 0.5
    for flags, sentence in (
            (("--calibration-keep-days", "30"), "--calibration-keep-days limits the calibration state that "
                                                "--online-calibration keeps: give --online-calibration too"),
            (("--online-calibration", "--calibration-keep-days", "0"),
             "--calibration-keep-days must be a positive number of days, got 0"),
            (("--online-calibration", "--calibration-keep-days", "nan"),
             "--calibration-keep-days must be a positive number of days, got nan")):
        with pytest.raises(CliError) as refused:
            config(*flags)
        assert str(refused.value) == sentence


def test_a_streams_calibration_keep_days_reaches_its_plan(small_model_dir, tmp_path):
    from seqwatch.pipelines.streaming import plan_stream

    plan = plan_stream(str(small_model_dir), str(tmp_path / "o"), online_calibration=True, calibration_keep_days=2.5)
    assert plan.config.calibration_keep_days == 2.5
    assert plan_stream(str(small_model_dir), str(tmp_path / "o")).config.calibration_keep_days == 0


def test_beams_refusal_of_a_runners_options_is_one_sentence_naming_the_flags():
    """Found by hand: ``seqwatch run --runner=DataflowRunner`` without Dataflow's options printed Beam's five lines
    ("Pipeline has validations errors:", then one per option). Beam's own check makes the message here."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from seqwatch.pipelines.runners import refused_options_sentence

    with pytest.raises(ValueError) as refused:
        beam.Pipeline(runner="DataflowRunner", options=PipelineOptions(["--region=europe-west1"]))
    assert refused_options_sentence(str(refused.value)) == (
        "the runner refuses the pipeline's options: it needs --temp_location (a gs:// path), --staging_location "
        "(a gs:// path) and --project")
    assert refused_options_sentence("Pipeline has validations errors: \nMissing required option: project.\n"
                                    "Invalid GCS path (x), given for the option: temp_location.") == (
        "the runner refuses the pipeline's options: it needs --project; invalid GCS path (x), given for the "
        "option: temp_location")
    assert refused_options_sentence("a mapping's column is missing") is None


def test_a_run_on_dataflow_without_its_options_says_which_in_one_sentence(small_model_dir, tmp_path, capsys):
    from seqwatch.models.synthetic import generate_sensor_data
    from seqwatch.pipelines.cli import main

    readings, _ = generate_sensor_data(n_entities=1, n_steps=40, seed=3, anomalies_per_entity=0)
    readings.to_csv(tmp_path / "in.csv", index=False)
    assert main(["run", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out"), "--model-dir",
                 str(small_model_dir), "--runner=DataflowRunner", "--project=seqwatch-test"]) == 2
    err = capsys.readouterr().err
    assert err == ("seqwatch run: the runner refuses the pipeline's options: it needs --temp_location (a gs:// "
                   "path), --staging_location (a gs:// path) and --region\n"), err


def test_a_portable_runner_without_its_job_server_is_one_sentence(tmp_path, capsys):
    """Before the input and the model are read (a stream checks its runner after them: ``test_runners.py``)."""
    from seqwatch.pipelines.cli import main

    assert main(["run", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out"), "--model-dir",
                 str(tmp_path / "model"), "--runner=PortableRunner"]) == 2
    assert capsys.readouterr().err == (
        "seqwatch run: --runner=PortableRunner needs --job_endpoint, the host:port of a running job server; or name "
        "the runner, whose job server Beam starts: --runner=PrismRunner, --runner=FlinkRunner\n")
