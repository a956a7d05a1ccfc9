"""Mapping values of the wrong JSON type, found by a bug hunt: ``"timezone": 5``, ``"entity": "pump-01"`` and
the like ended ``seqwatch run`` and ``seqwatch train`` with a TypeError or AttributeError traceback (exit 1), and
some were read as something else without a word (``"ignore": "status"`` ignored the columns 's', 't', 'a', ...;
``"entity": {"value": ""}`` quarantined every reading as missing_entity). Each is now one sentence naming the key,
what it must be and what it got, and exit code 2. Also: a mapping file with a UTF-8 byte-order mark (Notepad) is
read, and a long mapping's wide-only keys (``channels``, ``entity``, ``timestamp``) are refused, as their flags
are, rather than dropped."""
import json

import pytest

from seqwatch.pipelines.cli import CliError, _mapping_from_args, build_parser, main
from seqwatch.pipelines.parsing import FileLayout
from seqwatch.schemas.mapping import InputMapping, MappingError

ENTITY = ("the mapping's 'entity' must be one of {'column': NAME}, {'value': ID}, {'from_filename': true}, "
          "{'from_topic': LEVEL} (an MQTT topic level counted from 0) or {'from_key': true} (the Kafka message "
          "key), with NAME and ID non-empty text, got ")
CHANNELS = "the mapping's 'channels' must be a list of column names or an object of column and channel name"
COLUMNS = ("the mapping's 'columns' must be an object of role and column name (roles: entity_id, channel, "
           "timestamp, value)")
ZONE = "the mapping's 'timezone' must be an IANA zone name such as 'Europe/Berlin' or 'UTC', got "


@pytest.mark.parametrize("mapping, message", [
    ({"format": "wide", "timezone": 5}, ZONE + "the number 5"),
    ({"format": "wide", "timezone": None}, ZONE + "null"),
    ({"format": "wide", "sep": 59}, "the mapping's 'sep' must be one character, or null to sniff it from the header, "
                                    "got the number 59"),
    ({"format": "wide", "timestamp": 5}, "the mapping's 'timestamp' must be the name of the timestamp column, got the "
                                         "number 5"),
    ({"format": "wide", "timestamp": None}, "the mapping's 'timestamp' must be the name of the timestamp column, got "
                                            "null"),
    ({"format": "wide", "entity": "pump-01"}, ENTITY + "the text 'pump-01'"),
    ({"format": "wide", "entity": {"column": 5}}, ENTITY + 'the object {"column": 5}'),
    ({"format": "wide", "entity": {"from_filename": False}}, ENTITY + 'the object {"from_filename": false}'),
    ({"format": "wide", "entity": {"value": ""}}, ENTITY + 'the object {"value": ""}'),
    ({"format": "wide", "entity": {"value": None}}, ENTITY + 'the object {"value": null}'),
    ({"format": "wide", "entity": {"column": "site", "value": "p1"}}, ENTITY + 'the object {"column": "site", '
                                                                               '"value": "p1"}'),
    ({"format": "wide", "channels": "flow"}, CHANNELS + ", got the text 'flow'"),
    ({"format": "wide", "channels": {"flow": 5}}, CHANNELS + ", its 'flow' a channel name, got the number 5"),
    ({"format": "wide", "channels": ["flow", 5]}, CHANNELS + ', got the list ["flow", 5]'),
    ({"format": "long", "columns": ["entity_id"]}, COLUMNS + ', got the list ["entity_id"]'),
    ({"columns": {"value": 5}}, COLUMNS + ", its 'value' a column name, got the number 5"),
    ({"columns": {"device": "site"}}, COLUMNS + ', got the object {"device": "site"}'),
    ({"format": "wide", "ignore": 5}, "the mapping's 'ignore' must be a list of column names, got the number 5"),
    ({"format": "wide", "ignore": "status"}, "the mapping's 'ignore' must be a list of column names, got the text "
                                             "'status'"),
    ({"format": "wide", "ignore": ["status", None]}, "the mapping's 'ignore' must be a list of column names, got the "
                                                     'list ["status", null]'),
    ({"format": None}, "the mapping's 'format' must be 'long' or 'wide', got null"),
    ({"decimal": 0.5}, "the mapping's 'decimal' must be '.' or ',', got the number 0.5"),
    ({"extra_columns": False}, "the mapping's 'extra_columns' must be 'error' or 'ignore', got false"),
    ({"timestamp_unit": 1000}, "the mapping's 'timestamp_unit' must be one of ['s', 'ms', 'us', 'ns'], or null to "
                               "guess it from each value, got the number 1000"),
    ({"timestamp_format": 5}, "the mapping's 'timestamp_format' must be a strftime format such as '%d/%m/%Y "
                              "%H:%M:%S', or null for ISO 8601 and epoch numbers, got the number 5"),
    # keys a long file does not read, refused as their flags are (--entity, --timestamp-column)
    ({"format": "long", "channels": {"flow": "debit"}},
     "the mapping's 'channels' is for format 'wide', got the object {\"flow\": \"debit\"} with format 'long'; a long "
     "file's rows name their channel in its channel column, named in 'columns', and 'ignore' leaves channels out"),
    ({"format": "long", "entity": {"value": "X"}},
     "the mapping's 'entity' is for format 'wide', got the object {\"value\": \"X\"} with format 'long'; a long "
     "file's rows name their entity in its entity_id column, named in 'columns'"),
    ({"timestamp": "time"},
     "the mapping's 'timestamp' is for format 'wide', got the text 'time' with format 'long'; a long file's "
     "timestamp column is named in 'columns' (its role 'timestamp')"),
    ({"format": "wide", "columns": {"value": "reading"}},
     "the mapping's 'columns' is for format 'long', got the object {\"value\": \"reading\"} with format 'wide'; a "
     "wide file's columns are named by 'timestamp', 'entity' and 'channels'"),
])
def test_a_value_of_the_wrong_type_is_one_sentence(tmp_path, mapping, message):
    with pytest.raises(MappingError) as refused:
        InputMapping.from_dict(mapping)
    assert str(refused.value) == message
    # the same from a --mapping file with the format flags merged in (read_file checks each key before the merge)
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(mapping))
    args = build_parser().parse_args(["run", "--input", "x.csv", "--mapping", str(path), "--model-dir", "m",
                                      "--output", "o", "--ignore", "label", "--sep", ";"])
    with pytest.raises(MappingError) as refused:
        _mapping_from_args(args)
    assert str(refused.value) == message


def test_what_was_valid_still_is():
    # channels as a list: those columns under their own names (the README: "can list and rename the channel keys")
    listed = InputMapping.from_dict({"format": "wide", "channels": ["flow", "pressure"], "ignore": ["status"]})
    assert listed.channels == {"flow": "flow", "pressure": "pressure"} and listed.ignore == ("status",)
    layout = FileLayout.resolve(["timestamp", "flow", "pressure", "status"], listed, "/d/pump-01.csv")
    assert (layout.channel_columns, layout.channel_names) == (("flow", "pressure"), ("flow", "pressure"))
    assert InputMapping.from_dict(listed.to_dict()) == listed
    # a run's manifest holds every key (to_dict): the other format's defaults pass, as a replay merges onto them
    for mapping in (InputMapping(), InputMapping(format="wide", entity={"from_topic": 0}, timestamp="",
                                                 sep="\t", timestamp_unit="ms", timestamp_format="%d/%m/%Y")):
        assert InputMapping.from_dict(json.loads(json.dumps(mapping.to_dict()))) == mapping
    assert InputMapping.from_dict({**InputMapping(format="wide").to_dict(), "format": "long"}).format == "long"
    assert InputMapping(ignore=["a"]).ignore == ("a",)  # a list, as JSON gives it, from Python too


def test_a_mapping_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "notepad.json"
    path.write_bytes(b'\xef\xbb\xbf{"format": "wide", "sep": ";", "timezone": "Europe/Berlin"}\r\n')
    assert InputMapping.from_file(str(path)) == InputMapping(format="wide", sep=";", timezone="Europe/Berlin")
    path.write_bytes('{"format": "wide", "entity": {"value": "Pumpe-\u00e4"}}'.encode("cp1252"))
    with pytest.raises(MappingError, match=f"^mapping file {path} is not UTF-8 text: save it as UTF-8$"):
        InputMapping.read_file(str(path))


def test_a_wide_flag_on_a_long_mapping_file_is_refused_as_without_one(tmp_path):
    path = tmp_path / "long.json"
    path.write_text('{"format": "long", "sep": ";"}')
    args = build_parser().parse_args(["run", "--input", "x.csv", "--mapping", str(path), "--model-dir", "m",
                                      "--output", "o", "--entity-column", "site"])
    with pytest.raises(CliError, match=r"^--entity-column is for --format wide; a long file's rows name their "):
        _mapping_from_args(args)


@pytest.mark.parametrize("command", ["run", "train"])
def test_the_cli_says_it_in_one_line_with_exit_code_2(tmp_path, capsys, command):
    data = tmp_path / "wide" / "pump-01.csv"
    data.parent.mkdir()
    data.write_text("timestamp,flow,pressure,status\n2026-01-05T00:00:00Z,95.7,2.98,ok\n")
    mapping = tmp_path / "m.json"
    mapping.write_text('{"format": "wide", "ignore": "status"}')
    argv = [command, "--input", str(data), "--mapping", str(mapping), "--model-dir", str(tmp_path / "model")]
    assert main(argv + (["--output", str(tmp_path / "o")] if command == "run" else [])) == 2
    err = capsys.readouterr().err
    assert err == (f"seqwatch {command}: the mapping's 'ignore' must be a list of column names, got the text "
                   f"'status'\n")
    assert "Traceback" not in err
    assert not (tmp_path / "model").exists()
