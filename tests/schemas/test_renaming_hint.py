"""``renaming_hint``: a wide file whose columns name the model's channels in another case or with a unit gets
the mapping that reads them, in the refusal of a run or a fine-tuning."""
import json

from seqwatch.schemas.mapping import InputMapping, renaming_hint

MODEL = ("flow", "pressure", "temperature")


def _mapping(hint: str) -> dict:
    return json.loads(hint[hint.index("--mapping file ") + len("--mapping file "):hint.index(" reads them")])


def test_another_case_or_a_unit_is_read_as_the_channel():
    hint = renaming_hint(MODEL, ["Flow (l/min)", "PRESSURE", "temperature", "rssi"])
    assert hint.startswith("; its columns look like the model's under other names ('Flow (l/min)' for 'flow', "
                           "'PRESSURE' for 'pressure'): a --mapping file ")
    mapping = _mapping(hint)
    assert mapping == {"channels": {"Flow (l/min)": "flow", "PRESSURE": "pressure", "temperature": "temperature"},
                       "ignore": ["rssi"]}
    InputMapping.from_dict({"format": "wide", **mapping})  # a mapping the reader takes
    assert _mapping(renaming_hint(MODEL, ["flow_", "Pressure [bar]", "Temperature"])) == {
        "channels": {"flow_": "flow", "Pressure [bar]": "pressure", "Temperature": "temperature"}}


def test_no_hint_when_nothing_reads_as_a_missing_channel_or_two_columns_do():
    assert renaming_hint(MODEL, ["flow", "pressure"]) == ""  # temperature is simply not there
    assert renaming_hint(MODEL, ["flow", "pressure", "temperature"]) == ""  # nothing missing
    assert renaming_hint(MODEL, ["FLOW", "Flow [l/min]", "pressure", "temperature"]) == ""  # which one?
    assert renaming_hint(("flow",), ["flowrate"]) == ""  # another word, not another spelling


def test_a_unit_after_a_comma_or_as_a_last_word_with_a_sign_is_read_as_one():
    """Found by the bug hunt of real data (SKAB's columns with units): 'Volume Flow RateRMS, l/min' was not read
    as the channel, and the hint put it under "ignore", so the mapping it gave was refused again for a missing
    channel; 'Temperature °C' got no hint at all."""
    model = ("Volume Flow RateRMS", "Temperature", "Current")
    mapping = _mapping(renaming_hint(model, ["Volume Flow RateRMS, l/min", "Temperature °C", "Current (A)"]))
    assert mapping == {"channels": {"Volume Flow RateRMS, l/min": "Volume Flow RateRMS",
                                    "Temperature °C": "Temperature", "Current (A)": "Current"}}
    assert renaming_hint(("flow", "speed"), ["Flow, l/min", "rpm"]) == ""  # speed is not there: no half a mapping
