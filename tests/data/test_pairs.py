"""Preference pairs on disk (shiftlab.data.pairs): JSONL load / validate / save, errors naming file and line."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftlab.data.pairs import (
    LoadReport,
    PreferenceDataError,
    PreferencePair,
    load_preference_jsonl,
    save_preference_jsonl,
)

VALID = {"prompt": "the movie was", "chosen": " great .", "rejected": " awful !"}


FIELDS = ["prompt", "chosen", "rejected", "reward_chosen", "reward_rejected", "behaviour", "generated_at_step"]


def write_lines(path, lines: list[str | bytes]) -> None:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode("utf-8") for x in lines) + b"\n")


def row(**changes) -> str:
    return json.dumps({**VALID, **changes})


def test_round_trip_keeps_text_exactly(tmp_path):
    pairs = [
        PreferencePair("the movie was", " great .", " awful !"),  # leading spaces, rewards None
        PreferencePair("Ünïcødé prompt 😀", " réponse\nmulti-line\u2028sep", "\tother", 0.5, -1.25, "sft", 0),
        PreferencePair("p", " a", " b", 3.0, None, "policy@step40", 40),
        PreferencePair("p", " a", " c", 1.7976931348623157e308, -5e-324),  # extreme but finite rewards
    ]
    path = tmp_path / "sub" / "prefs.jsonl"
    save_preference_jsonl(pairs, path)
    loaded, report = load_preference_jsonl(path)
    assert loaded == pairs
    assert report == LoadReport(n_loaded=4, skipped={}, first_skipped=[])
    assert len(path.read_text(encoding="utf-8").splitlines()) == 4 + 1  # the U+2028 splits str.splitlines only
    assert set(json.loads(path.read_bytes().split(b"\n")[0])) == set(FIELDS)
    assert [p.name for p in path.parent.iterdir()] == ["prefs.jsonl"]  # no temp file left behind


def test_save_validates_and_leaves_old_file_intact(tmp_path):
    path = tmp_path / "prefs.jsonl"
    save_preference_jsonl([PreferencePair(**VALID)], path)
    before = path.read_bytes()
    with pytest.raises(PreferenceDataError, match=r'prefs\.jsonl: pairs\[1\]: fields "chosen" and "rejected"'):
        save_preference_jsonl([PreferencePair(**VALID), PreferencePair("p", " same", " same")], path)
    with pytest.raises(TypeError, match=r"pairs\[0\]"):
        save_preference_jsonl([VALID], path)
    with pytest.raises(PreferenceDataError, match="no pairs to save"):
        save_preference_jsonl([], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["prefs.jsonl"]


def test_user_jsonl_with_extra_keys_crlf_bom_and_blank_lines(tmp_path):
    path = tmp_path / "user.jsonl"
    text = "\ufeff" + row(source="web", reward_chosen=2) + "\r\n\r\n   \n" + row(chosen=" fine .") + "\r\n"
    path.write_bytes(text.encode("utf-8"))
    pairs, report = load_preference_jsonl(path)
    assert pairs == [PreferencePair(**VALID, reward_chosen=2.0), PreferencePair(**{**VALID, "chosen": " fine ."})]
    assert isinstance(pairs[0].reward_chosen, float) and report.n_loaded == 2 and report.n_skipped == 0


BAD_LINES = [  # (line, reason, expected message after "path:3: ")
    ('{"prompt": "a",', "invalid_json", "invalid JSON ("),
    ("[1, 2]", "not_object", "line must be a JSON object with fields prompt, chosen, rejected, got [1, 2] (list)"),
    ('"text"', "not_object", "got 'text' (str)"),
    (json.dumps({"prompt": "a", "chosen": " b"}), "missing_field", 'missing required field "rejected"'),
    (row(chosen=42), "bad_text", 'field "chosen" must be a non-empty string, got 42 (int)'),
    (row(prompt=None), "bad_text", 'field "prompt" must be a non-empty string, got null'),
    (row(prompt=""), "bad_text", 'field "prompt" must be a non-empty string'),
    (row(rejected=[" x"]), "bad_text", "got [' x'] (list)"),
    ('{"prompt": "a", "chosen": "\\ud800", "rejected": " b"}', "bad_text", 'field "chosen" must be valid Unicode'),
    (row(rejected=""), "empty_response", "field \"rejected\" must be a non-empty string, got '' (str)"),
    (row(chosen=" \t\n "), "empty_response", 'field "chosen" must be a non-empty string'),
    (row(rejected=" great ."), "identical_responses", 'fields "chosen" and "rejected" must differ'),
    (row(reward_chosen="high"), "bad_reward", "field \"reward_chosen\" must be a finite number or null, got 'high'"),
    (row(reward_rejected=True), "bad_reward", 'field "reward_rejected" must be a finite number or null, got True'),
    (row(reward_chosen=math.nan), "bad_reward", "got nan (float)"),
    (row(reward_chosen=10**400), "bad_reward", 'field "reward_chosen" must be a finite number'),
    (row(behaviour=3), "bad_metadata", 'field "behaviour" must be a string or null, got 3 (int)'),
    (row(generated_at_step=-1), "bad_metadata", 'field "generated_at_step" must be an integer >= 0 or null'),
    (row(generated_at_step=1.5), "bad_metadata", "got 1.5 (float)"),
    (b'{"prompt": "\xff"}', "invalid_utf8", "line is not valid UTF-8"),
]


@pytest.mark.parametrize(
    ("line", "reason", "expected"), BAD_LINES, ids=[f"{r}-{i}" for i, (_, r, _) in enumerate(BAD_LINES)]
)
def test_bad_line_names_file_and_line(tmp_path, line, reason, expected):
    path = tmp_path / "prefs.jsonl"
    write_lines(path, [row(), "", line, row(chosen=" ok .")])  # the bad row is on physical line 3
    with pytest.raises(PreferenceDataError) as info:
        load_preference_jsonl(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert expected in str(info.value)

    pairs, report = load_preference_jsonl(path, on_invalid="skip")
    assert [p.chosen for p in pairs] == [" great .", " ok ."]
    assert report.n_loaded == 2 and report.skipped == {reason: 1}
    assert report.first_skipped == [str(info.value)]


def test_exact_message_for_a_non_string_response(tmp_path):
    path = tmp_path / "prefs.jsonl"
    write_lines(path, [row()] * 16 + [row(chosen=42)])
    with pytest.raises(PreferenceDataError) as info:
        load_preference_jsonl(path)
    assert str(info.value) == f'{path}:17: field "chosen" must be a non-empty string, got 42 (int)'
    assert isinstance(info.value, ValueError)


def test_skip_mode_counts_by_reason_and_caps_locations(tmp_path):
    path = tmp_path / "prefs.jsonl"
    lines = [row(), "nope", "[]", row(rejected=""), row(chosen=""), "{", row(reward_chosen="x"), "{}", row()]
    write_lines(path, lines)
    pairs, report = load_preference_jsonl(path, on_invalid="skip")
    assert len(pairs) == 2 and report.n_loaded == 2 and report.n_skipped == 7
    assert report.skipped == {
        "invalid_json": 2,
        "not_object": 1,
        "empty_response": 2,
        "bad_reward": 1,
        "missing_field": 1,
    }
    assert [loc.split(": ")[0] for loc in report.first_skipped] == [f"{path}:{n}" for n in (2, 3, 4, 5, 6)]


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"[]\n{}\n"])
def test_no_valid_rows_is_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(PreferenceDataError, match="empty.jsonl") as info:
        load_preference_jsonl(path, on_invalid="skip")
    assert "no valid preference pairs" in str(info.value)


def test_missing_file_and_bad_mode(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_preference_jsonl(tmp_path / "missing.jsonl")
    write_lines(tmp_path / "ok.jsonl", [row()])
    with pytest.raises(ValueError, match="on_invalid"):
        load_preference_jsonl(tmp_path / "ok.jsonl", on_invalid="ignore")  # type: ignore[arg-type]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


text_or_any = st.text(max_size=12) | json_values


near_valid = st.dictionaries(st.sampled_from(FIELDS), text_or_any, min_size=2, max_size=7)


valid = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=8), "chosen": st.text(max_size=8), "rejected": st.text(max_size=8)},
    optional={"reward_chosen": st.floats(allow_nan=False, allow_infinity=False), "generated_at_step": st.integers(0)},
)


LOAD_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_load(path, n_rows: int | None) -> None:
    """Only PreferenceDataError (naming the file) may escape; skip mode accounts for every row."""
    try:
        strict, _ = load_preference_jsonl(path)
    except PreferenceDataError as err:
        assert str(path) in str(err)
        strict = None
    try:
        pairs, report = load_preference_jsonl(path, on_invalid="skip")
    except PreferenceDataError as err:
        assert str(path) in str(err)
        return
    assert strict is None or (strict == pairs and report.n_skipped == 0)
    if n_rows is not None:
        assert report.n_loaded + report.n_skipped == n_rows
    save_preference_jsonl(pairs, path)  # whatever loads also saves and reloads identically
    assert load_preference_jsonl(path)[0] == pairs


@LOAD_SETTINGS
@given(values=st.lists(json_values | near_valid | valid, min_size=0, max_size=5))
def test_property_arbitrary_json_lines(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("prop") / "prefs.jsonl"
    write_lines(path, [json.dumps(v) for v in values])
    _check_load(path, n_rows=len(values))


@LOAD_SETTINGS
@given(content=st.text(max_size=60) | st.binary(max_size=60))
def test_property_arbitrary_text_and_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("prop") / "prefs.jsonl"
    path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    _check_load(path, n_rows=None)
