"""``ValidateReadings``: cheap checks first, then the suite; each failing reading (not its batch) is quarantined."""
from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from seqwatch.pipelines.validate import FUTURE_REASON, ValidateReadings, cheap_checks, horizon_reason
from seqwatch.schemas.elements import Quarantined, ReadingBatch
from seqwatch.schemas.validation import load_suite_dict

T = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z
EARLIEST, LATEST = 946_684_800_000_000, T + 86_400_000_000
CHANNELS = ("flow", "pressure", "temperature", "vibration")
ROWS = [  # channel, timestamp, value, line: what happens to it
    ("flow", T, 100.0, 2),                     # valid
    ("humidity", T, 40.0, 3),                  # unknown_channel
    ("flow", T + 2 * 86_400_000_000, 1.0, 4),  # future_timestamp
    ("humidity", 0, 1.0, 5),                   # unknown_channel comes first
    ("pressure", 0, 1.0, 6),                   # before_horizon
    ("temperature", T, 2000.0, 7),             # expectation_failed (temperature bounds)
    ("vibration", T, 1e300, 8),                # expectation_failed (±1e9 comes before the vibration bounds)
    ("temperature", T + 10_000_000, 61.0, 9),  # valid
]


def _batch(rows):
    n = len(rows)
    return ReadingBatch.from_columns(["e1"] * n, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                                     ["in.csv"] * n, [r[3] for r in rows])


def q(line, channel, code, reason):
    return Quarantined("", "in.csv", line, channel, 1, "validate", code, reason, "r1")


def test_cheap_checks_exclude_rows_caught_by_an_earlier_check():
    frame = _batch(ROWS).frame
    masks = {code: np.flatnonzero(mask).tolist() for mask, code, _ in cheap_checks(frame, CHANNELS, EARLIEST, LATEST)}
    assert masks == {"unknown_channel": [1, 3], "future_timestamp": [2], "before_horizon": [4]}


def test_the_horizon_reasons_name_the_likely_causes_and_hold_no_clock_reading():
    """An Excel serial date (45000.5) or elapsed seconds read as epoch seconds land in 1970: the reason says so,
    with the horizon, and no time of the run (a rerun writes the same records)."""
    assert horizon_reason(EARLIEST) == (
        "the timestamp lies before the horizon, 2000-01-01T00:00:00Z: a clock that was never set, or times counted "
        "from the start of a recording (elapsed seconds, Excel serial days) rather than dates; --earliest sets the "
        "horizon for older readings")
    assert "timestamp_unit" in FUTURE_REASON and not any(c.isdigit() for c in FUTURE_REASON)


def test_validate_readings_routes_each_failing_reading():
    unknown = "the model has no such channel (it has ['flow', 'pressure', 'temperature', 'vibration'])"
    expected_quarantine = [
        q(3, "humidity", "unknown_channel", unknown),
        q(5, "humidity", "unknown_channel", unknown),
        q(4, "flow", "future_timestamp", FUTURE_REASON),
        q(6, "pressure", "before_horizon", horizon_reason(EARLIEST)),
        q(7, "temperature", "expectation_failed",
          "channel 'temperature' value 2000.0 failed expect_column_values_to_be_between(value, max_value=1500.0, "
          "min_value=-60.0) for temperature channels"),
        q(8, "vibration", "expectation_failed",
          "channel 'vibration' value 1e+300 failed expect_column_values_to_be_between(value, "
          "max_value=1000000000.0, min_value=-1000000000.0)"),
    ]
    with TestPipeline() as p:
        out = (p | beam.Create([_batch(ROWS)])
               | ValidateReadings(CHANNELS, load_suite_dict("sensor"), "r1", EARLIEST, LATEST))
        valid = out.valid | "Rows" >> beam.FlatMap(
            lambda b: [tuple(r) for r in b.frame[["channel", "timestamp", "value", "line"]].itertuples(index=False)])
        assert_that(valid, equal_to([("flow", T, 100.0, 2), ("temperature", T + 10_000_000, 61.0, 9)]),
                    label="valid")
        assert_that(out.quarantine, equal_to(expected_quarantine), label="quarantine")


def test_packed_validation_gives_a_table_per_source_and_batch_of_the_same_records():
    """A batch run's validation packs its quarantined records (``packed_quarantine``): the records are those it
    gives one by one, small batches judged together (``merge_below``) included, each table of one source."""
    from seqwatch.pipelines.graph import _quarantined_records
    from seqwatch.schemas.elements import PackedQuarantine

    def other(rows):
        return ReadingBatch(_batch(rows).frame.assign(source="other.csv"))

    batches = [_batch(ROWS), other([("humidity", T, 1.0, 2), ("flow", T, 1.0, 3)])]
    suite = load_suite_dict("sensor")
    with TestPipeline() as p:
        created = p | beam.Create(batches)
        one_by_one = created | "OneByOne" >> ValidateReadings(CHANNELS, suite, "r1", EARLIEST, LATEST)
        for merge_below in (0, 1_000):
            packed = created | f"Packed{merge_below}" >> ValidateReadings(CHANNELS, suite, "r1", EARLIEST, LATEST,
                                                                          merge_below, packed_quarantine=True)
            kinds = packed.quarantine | f"Kinds{merge_below}" >> beam.Map(
                lambda t: (type(t) is PackedQuarantine, t.source, set(t.table.column("source").to_pylist())))
            assert_that(kinds, equal_to([(True, "in.csv", {"in.csv"}), (True, "other.csv", {"other.csv"})]),
                        label=f"tables {merge_below}")
            assert_that(packed.quarantine | f"Unpacked{merge_below}" >> beam.FlatMap(_quarantined_records),
                        equal_to(_one_by_one(batches, suite)),
                        label=f"records {merge_below}")
        assert_that(one_by_one.quarantine, equal_to(_one_by_one(batches, suite)), label="one by one")


def _one_by_one(batches, suite) -> list:
    from seqwatch.pipelines.validate import _ValidateBatch

    fn = _ValidateBatch(CHANNELS, suite, "r1", EARLIEST, LATEST)
    fn.setup()
    records = []
    for batch in batches:
        judged, _ = fn._judge(batch.frame)
        records += [q for _, q in judged]
    assert len(records) == 7  # six of ROWS, one of other.csv
    return records


def test_a_batch_with_no_valid_reading_yields_no_batch():
    with TestPipeline() as p:
        out = (p | beam.Create([_batch([("humidity", T, 1.0, 2)])])
               | ValidateReadings(CHANNELS, load_suite_dict("sensor"), "r1", EARLIEST, LATEST))
        assert_that(out.valid, equal_to([]), label="valid")
        assert_that(out.quarantine | beam.Map(lambda r: r.reason_code), equal_to(["unknown_channel"]), label="q")


def test_valid_history_leaves_out_what_a_run_quarantines_in_validation():
    """Training history is judged as a run judges readings: the horizon, the suite, monotone meters."""
    from seqwatch.pipelines.validate import valid_history

    rows = [r for r in ROWS if r[0] != "humidity"]  # training models the channels it is given
    frame, left_out, first = valid_history(_batch(rows).frame, load_suite_dict("sensor"), EARLIEST, LATEST)
    in_twos = valid_history(_batch(rows).frame, load_suite_dict("sensor"), EARLIEST, LATEST, chunk_rows=2)
    assert in_twos[0].equals(frame) and in_twos[1:] == (left_out, first)  # the suite judges a chunk at a time
    assert left_out == {"future_timestamp": 1, "before_horizon": 1, "expectation_failed": 2}
    assert first == {"future_timestamp": FUTURE_REASON,  # the run's reasons
                     "before_horizon": horizon_reason(EARLIEST),
                     "expectation_failed": "channel 'temperature' value 2000.0 failed "
                                           "expect_column_values_to_be_between(value, max_value=1500.0, min_value=-60.0) "
                                           "for temperature channels"}
    assert frame["line"].tolist() == [2, 9] and frame.index.tolist() == [0, 1]

    minute = 60_000_000
    meter = [  # channel, timestamp, value, line: entity e1's energy meter and its power
        ("energy_kwh", T, 10.0, 2), ("energy_kwh", T + minute, 11.0, 3),
        ("energy_kwh", T + 2 * minute, 9.5, 4),        # went back: monotonic_decrease
        ("energy_kwh", T + 3 * minute, 9.6, 5),        # counts up again from the new value: kept
        ("energy_kwh", T + minute, 11.0, 6),           # the same reading again: a run quarantines it as duplicate
        ("power", T + 2 * minute, 5.0, 7), ("power", T + 3 * minute, 4.0, 8),  # not a meter: may fall
    ]
    other = [("energy_kwh", T + 2 * minute, 1.0, 9)]   # another entity's meter: judged on its own
    frame = ReadingBatch.from_columns(["e1"] * len(meter) + ["e2"], [r[0] for r in meter + other],
                                      [r[1] for r in meter + other], [r[2] for r in meter + other],
                                      ["in.csv"] * 8, [r[3] for r in meter + other]).frame
    kept, left_out, first = valid_history(frame, load_suite_dict("energy"), EARLIEST, LATEST)
    assert left_out == {"monotonic_decrease": 1, "duplicate": 1}
    assert first == {"monotonic_decrease": "meter 'energy_kwh' went back from 11.0 to 9.5",
                     "duplicate": "a reading with the same entity, channel and timestamp came earlier"}
    assert kept["line"].tolist() == [2, 3, 5, 7, 8, 9]


def _sourced(rows, source):
    n = len(rows)
    return ReadingBatch.from_columns(["e1"] * n, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                                     [source] * n, [r[3] for r in rows])


def test_small_batches_are_judged_together_with_the_same_verdicts_and_leave_in_order():
    """A batch run holds batches below ``merge_below`` readings (small files') and validates them in one call:
    each batch still leaves as itself minus its failing rows, in the order it came (a file's batches stay
    together downstream), a large batch first lets the held ones out, and the quarantined records are the same."""
    from apache_beam.utils.windowed_value import WindowedValue

    from seqwatch.pipelines.validate import _ValidateBatch

    batches = [_sourced(ROWS[:4], "a.csv"), _sourced(ROWS[4:], "b.csv"), _sourced(ROWS * 3, "c.csv"),
               _sourced(ROWS[::2], "d.csv")]

    def run(merge_below):
        fn = _ValidateBatch(CHANNELS, load_suite_dict("sensor"), "r1", EARLIEST, LATEST, merge_below)
        fn.setup()
        fn.start_bundle()
        out = [o for i, b in enumerate(batches) for o in fn.process(b, i, None)] + list(fn.finish_bundle())
        unwrap = [(o.tag, o.value) if isinstance(o, beam.pvalue.TaggedOutput) else (None, o) for o in out]
        unwrap = [(tag, v.value if isinstance(v, WindowedValue) else v) for tag, v in unwrap]
        valid = [v.frame[["source", "line"]].astype(str).values.tolist() for tag, v in unwrap if tag is None]
        records = sorted(v for tag, v in unwrap if tag is not None)
        return valid, records, out

    alone, alone_records, _ = run(0)
    merged, merged_records, out = run(20)  # a, b and d are below 20 readings, c (24) is not
    assert merged == alone and merged_records == alone_records
    assert [rows[0][0] for rows in merged] == ["a.csv", "b.csv", "c.csv", "d.csv"]
    assert len(alone_records) == 6 + 18 + 3  # ROWS has 6 failing rows; d holds lines 2, 4, 6, 8 (3 failing)
    # Held batches leave stamped with their own timestamp (here: their position) and window once judged: a and b
    # when c comes (c goes through as it is), d when the bundle ends; so do their quarantined records.
    main = [o for o in out if not isinstance(o, beam.pvalue.TaggedOutput)]
    assert [type(o).__name__ for o in main] == ["WindowedValue", "WindowedValue", "ReadingBatch", "WindowedValue"]
    assert [(o.timestamp.micros, tuple(o.windows)) for o in main if isinstance(o, WindowedValue)] == [
        (0, (None,)), (1_000_000, (None,)), (3_000_000, (None,))]
    stamped = {(o.value.value.source, o.value.timestamp.micros) for o in out
               if isinstance(o, beam.pvalue.TaggedOutput) and isinstance(o.value, WindowedValue)}
    assert stamped == {("a.csv", 0), ("b.csv", 1_000_000), ("d.csv", 3_000_000)}


def test_merged_validation_in_a_pipeline_gives_what_batch_by_batch_validation_gives():
    batches = [_sourced(ROWS, f"f{i}.csv") for i in range(6)]

    def outputs(p, label, merge_below):
        out = (p | f"Create{label}" >> beam.Create(batches)
               | label >> ValidateReadings(CHANNELS, load_suite_dict("sensor"), "r1", EARLIEST, LATEST, merge_below))
        valid = out.valid | f"Rows{label}" >> beam.FlatMap(
            lambda b: [tuple(map(str, r)) for r in b.frame[["source", "line"]].itertuples(index=False)])
        return valid, out.quarantine

    with TestPipeline() as p:
        valid, quarantine = outputs(p, "Alone", 0)
        valid_merged, quarantine_merged = outputs(p, "Merged", 30)
        expected = [(f"f{i}.csv", str(line)) for i in range(6) for line in (2, 9)]
        assert_that(valid, equal_to(expected), label="ValidAlone")
        assert_that(valid_merged, equal_to(expected), label="ValidMerged")
        assert_that(quarantine_merged | "CountMerged" >> beam.combiners.Count.Globally(), equal_to([36]),
                    label="QuarantineMerged")
        assert_that(quarantine | "CountAlone" >> beam.combiners.Count.Globally(), equal_to([36]),
                    label="QuarantineAlone")


def test_a_reading_that_fails_a_rule_on_its_entity_or_timestamp_is_quarantined_naming_them():
    """Bug hunt of user suites: a rule on entity_id (the entity from a file name, absent from the raw line) was
    quoted with the reading's channel and value only, so nothing in the record showed the value that failed."""
    suite = {"name": "ids", "expectations": [
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "entity_id", "regex": "^pump-\\d+$"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "timestamp", "max_value": T}},
    ]}
    rows = [("flow", T, 100.0, 2), ("flow", T + 1_000_000, 100.0, 3)]
    batch = ReadingBatch.from_columns(["pump-1", "pump-1"], [r[0] for r in rows], [r[1] for r in rows],
                                      [r[2] for r in rows], ["in.csv"] * 2, [r[3] for r in rows])
    bad_entity = _batch(rows[:1])  # entity "e1"
    with TestPipeline() as p:
        out = p | beam.Create([batch, bad_entity]) | ValidateReadings(CHANNELS, suite, "r1", EARLIEST, LATEST)
        assert_that(out.quarantine, equal_to([
            q(3, "flow", "expectation_failed",
              "channel 'flow' value 100.0, timestamp 2026-01-05T00:00:01+00:00 (1767571201000000 µs) failed "
              "expect_column_values_to_be_between(timestamp, max_value=1767571200000000.0)"),
            q(2, "flow", "expectation_failed",
              "channel 'flow' value 100.0, entity 'e1' failed expect_column_values_to_match_regex(entity_id, "
              "regex=^pump-\\d+$)")]))
