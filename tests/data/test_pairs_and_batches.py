"""Tests for shiftlab.data.pairs and shiftlab.data.batches: JSONL load/validate/save and the PreferenceCollator masks and truncation."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftlab.data.batches import PreferenceBatch, PreferenceCollator, ensure_pad_token, truncate_pair
from shiftlab.data.pairs import (
    LoadReport,
    PreferenceDataError,
    PreferencePair,
    load_preference_jsonl,
    save_preference_jsonl,
)

EOS = "<|endoftext|>"  # the eos of the `tiny_tokenizer` fixture (tests/conftest.py)
VALID = {"prompt": "the movie was", "chosen": " great .", "rejected": " awful !"}
FIELDS = ["prompt", "chosen", "rejected", "reward_chosen", "reward_rejected", "behaviour", "generated_at_step"]


def write_lines(path, lines: list[str | bytes]) -> None:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode("utf-8") for x in lines) + b"\n")


def row(**changes) -> str:
    return json.dumps({**VALID, **changes})


# --- file I/O -----------------------------------------------------------------------------------------------


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


# --- tokenization -------------------------------------------------------------------------------------------


def test_ensure_pad_token(tiny_tokenizer):
    bare = copy.deepcopy(tiny_tokenizer)
    assert tiny_tokenizer.pad_token is None
    assert ensure_pad_token(tiny_tokenizer) is tiny_tokenizer
    assert tiny_tokenizer.pad_token == EOS and tiny_tokenizer.pad_token_id == tiny_tokenizer.eos_token_id
    tiny_tokenizer.pad_token = "<unk>"
    assert ensure_pad_token(tiny_tokenizer).pad_token == "<unk>"  # an existing pad token is kept
    bare.eos_token = None
    with pytest.raises(ValueError, match="neither a pad_token nor an eos_token"):
        ensure_pad_token(bare)


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_collator_masks_and_row_order(tiny_tokenizer):
    tok = tiny_tokenizer
    pairs = [
        PreferencePair("the movie was", " great .", " awful !"),
        PreferencePair("i loved it", " . the acting was fine .", " bad"),
    ]
    batch = PreferenceCollator(tok, max_length=32, max_prompt_length=16)(pairs)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert pad == eos  # the tokenizer had no pad token; padding is excluded by the masks, not by id
    expected = [  # chosen rows first, then rejected rows, in pair order
        (ids(tok, "the movie was"), ids(tok, "great .")),
        (ids(tok, "i loved it"), ids(tok, ". the acting was fine .")),
        (ids(tok, "the movie was"), ids(tok, "awful !")),
        (ids(tok, "i loved it"), ids(tok, "bad")),
    ]
    width = max(len(p) + len(r) + 1 for p, r in expected)
    assert batch.input_ids.shape == batch.attention_mask.shape == batch.loss_mask.shape == (4, width)
    assert batch.input_ids.dtype == batch.attention_mask.dtype == torch.long and batch.loss_mask.dtype == torch.bool
    assert (batch.n_pairs, batch.n_truncated) == (2, 0)
    for r, (prompt, response) in enumerate(expected):
        n_pad = width - len(prompt) - len(response) - 1
        assert batch.input_ids[r].tolist() == prompt + response + [eos] + [pad] * n_pad
        assert batch.attention_mask[r].tolist() == [1] * (width - n_pad) + [0] * n_pad
        assert batch.loss_mask[r].tolist() == [False] * len(prompt) + [True] * (len(response) + 1) + [False] * n_pad
    assert not batch.loss_mask[:, 0].any()
    assert batch.chosen_slice == slice(0, 2) and batch.rejected_slice == slice(2, 4)
    moved = batch.to("cpu")
    assert isinstance(moved, PreferenceBatch) and torch.equal(moved.loss_mask, batch.loss_mask)


def test_truncation_rule(tiny_tokenizer):
    tok = tiny_tokenizer
    eos = tok.eos_token_id
    collate = PreferenceCollator(tok, max_length=6, max_prompt_length=3)
    pairs = [
        PreferencePair("the film was good and the", " acting was fine .", " bad"),  # prompt cut; chosen cut
        PreferencePair("the movie was", " great .", " awful ! it was bad"),  # only rejected cut
        PreferencePair("the movie", " was great .", " was ok"),  # fits exactly: eos kept
        PreferencePair("the movie was", " great . i", " ok"),  # response fills the room: eos dropped
    ]
    batch = collate(pairs)
    rows = [batch.input_ids[r][batch.attention_mask[r].bool()].tolist() for r in range(8)]
    assert rows[0] == ids(tok, "good and the acting was fine")  # last 3 prompt tokens; response cut on the right
    assert rows[4] == ids(tok, "good and the bad") + [eos]
    assert rows[1] == ids(tok, "the movie was great .") + [eos]
    assert rows[5] == ids(tok, "the movie was awful ! it")
    assert rows[2] == ids(tok, "the movie was great .") + [eos]
    assert rows[3] == ids(tok, "the movie was great . i")
    assert batch.loss_mask[0].tolist() == [False] * 3 + [True] * 3
    assert batch.loss_mask[3].tolist() == [False] * 3 + [True] * 3
    assert batch.input_ids.shape == (8, 6) and batch.n_truncated == 3  # pairs 0, 1 and 3


@settings(max_examples=200, deadline=None)
@given(
    prompt=st.lists(st.integers(1, 50), min_size=1, max_size=20),
    response=st.lists(st.integers(1, 50), max_size=20),
    max_length=st.integers(2, 30),
    data=st.data(),
)
def test_property_truncate_pair(prompt, response, max_length, data):
    max_prompt_length = data.draw(st.integers(1, max_length - 1))
    kept_prompt, kept_response, cut = truncate_pair(prompt, response, 0, max_length, max_prompt_length)
    full = response + [0]
    assert 1 <= len(kept_prompt) <= max_prompt_length and prompt[len(prompt) - len(kept_prompt) :] == kept_prompt
    assert len(kept_response) >= 1 and full[: len(kept_response)] == kept_response
    assert len(kept_prompt) + len(kept_response) <= max_length
    assert cut == (kept_prompt != prompt or kept_response != full)
    assert not cut or len(kept_prompt) + len(kept_response) == max_length or kept_response == full


def test_collator_argument_validation(tiny_tokenizer):
    with pytest.raises(ValueError, match=r"max_prompt_length \(8\) must be < max_length \(8\)"):
        PreferenceCollator(tiny_tokenizer, max_length=8, max_prompt_length=8)
    for kwargs, name in [
        ({"max_length": 1, "max_prompt_length": 1}, "max_length"),
        ({"max_length": 8.0, "max_prompt_length": 2}, "max_length"),
        ({"max_length": 8, "max_prompt_length": 0}, "max_prompt_length"),
        ({"max_length": 8, "max_prompt_length": True}, "max_prompt_length"),
    ]:
        with pytest.raises(ValueError, match=f"^{name} must be an integer"):
            PreferenceCollator(tiny_tokenizer, **kwargs)
    collate = PreferenceCollator(tiny_tokenizer, max_length=8, max_prompt_length=4)
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(ValueError, match="pair 1: prompt ' ' tokenizes to zero tokens"):
        collate([PreferencePair(**VALID), PreferencePair(" ", " a", " b")])
