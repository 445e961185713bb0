"""Preference pairs on disk: load / validate / save JSONL. `collect_rows` applies the same row rules and error
policy to rows of any other format (`shiftlab.data.datasets`).

A JSONL row holds at least ``prompt``, ``chosen`` and ``rejected`` (extra keys are ignored). Responses keep
their leading space (prompt ``"the movie was"``, chosen ``" great ."``) because prompt and response are
tokenized separately and concatenated, so texts must round-trip exactly.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

TEXT_FIELDS = ("prompt", "chosen", "rejected")


REWARD_FIELDS = ("reward_chosen", "reward_rejected")


MAX_SKIPPED_SHOWN = 5


_SURROGATE = re.compile("[\ud800-\udfff]")


T = TypeVar("T")


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    reward_chosen: float | None = None
    reward_rejected: float | None = None
    behaviour: str | None = None  # policy that generated the responses ("sft", "policy@step40"); None = human
    generated_at_step: int | None = None


class PreferenceDataError(ValueError):
    """A preference file (or pair) is malformed; the message names the file and 1-based line."""


@dataclass
class LoadReport:
    n_loaded: int
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    first_skipped: list[str] = field(default_factory=list)  # "path:line: message", at most MAX_SKIPPED_SHOWN

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


class InvalidRecord(Exception):
    """One row broke a rule: `reason` is the key it is counted under when skipped, `message` says what was expected."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def _describe(value: Any) -> str:
    text = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."  # error path only
    return "null" if value is None else f"{text} ({type(value).__name__})"


def _parse_reward(obj: dict, key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    # compare ints exactly: float() of a huge JSON integer would overflow
    if not ok or not (math.isfinite(value) if isinstance(value, float) else abs(value) <= sys.float_info.max):
        raise InvalidRecord("bad_reward", f'field "{key}" must be a finite number or null, got {_describe(value)}')
    return float(value)


def parse_preference_record(obj: Any) -> PreferencePair:
    """JSON value -> PreferencePair, or raise `InvalidRecord` with a reason key and a message saying what was expected."""
    if not isinstance(obj, dict):
        expected = "line must be a JSON object with fields prompt, chosen, rejected"
        raise InvalidRecord("not_object", f"{expected}, got {_describe(obj)}")
    for key in TEXT_FIELDS:
        if key not in obj:
            raise InvalidRecord("missing_field", f'missing required field "{key}" (need prompt, chosen, rejected)')
    for key in TEXT_FIELDS:  # a prompt may be blank-ish (" "), a response may not
        value = obj[key]
        if isinstance(value, str) and (value if key == "prompt" else value.strip()):
            continue
        reason = "empty_response" if isinstance(value, str) and key != "prompt" else "bad_text"
        raise InvalidRecord(reason, f'field "{key}" must be a non-empty string, got {_describe(value)}')
    for key in (*TEXT_FIELDS, "behaviour"):
        # JSON "\ud800" escapes decode to lone surrogates, which UTF-8 (save, tokenizers) cannot encode
        if isinstance(obj.get(key), str) and _SURROGATE.search(obj[key]):
            raise InvalidRecord("bad_text", f'field "{key}" must be valid Unicode, got a lone surrogate escape')
    if obj["chosen"] == obj["rejected"]:
        raise InvalidRecord("identical_responses", 'fields "chosen" and "rejected" must differ, got the same text')
    rewards = [_parse_reward(obj, key) for key in REWARD_FIELDS]
    behaviour, step = obj.get("behaviour"), obj.get("generated_at_step")
    if behaviour is not None and not isinstance(behaviour, str):
        raise InvalidRecord("bad_metadata", f'field "behaviour" must be a string or null, got {_describe(behaviour)}')
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        expected = 'field "generated_at_step" must be an integer >= 0 or null'
        raise InvalidRecord("bad_metadata", f"{expected}, got {_describe(step)}")
    return PreferencePair(obj["prompt"], obj["chosen"], obj["rejected"], *rewards, behaviour, step)


def decode_json_line(raw: bytes) -> Any:
    """One non-blank JSONL line -> its JSON value (possibly null), or raise `InvalidRecord`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidRecord("invalid_utf8", f"line is not valid UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidRecord("invalid_json", f"invalid JSON ({err.msg} at column {err.colno})") from None
    except (ValueError, RecursionError) as err:  # over-long integers, absurd nesting
        raise InvalidRecord("invalid_json", f"invalid JSON ({type(err).__name__}: {str(err)[:80]})") from None


def read_lines(data: bytes, name: str) -> Iterator[tuple[str, bytes]]:
    """("name:line", raw line) for every non-blank physical line (1-based numbers), a leading byte-order mark dropped."""
    for lineno, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        if raw.strip(b" \t\r"):
            yield f"{name}:{lineno}", raw


def collect_rows(
    rows: Iterable[tuple[str, Any]],
    parse: Callable[[Any], T | None],
    source: str,
    on_invalid: Literal["raise", "skip"] = "raise",
    what: str = "preference pairs",
) -> tuple[list[T], LoadReport]:
    """Parse (where, raw) rows, the one error policy for every format: a row whose `parse` raises `InvalidRecord`
    fails naming `where`, or under "skip" is counted by reason; a `parse` that returns None drops the row silently."""
    if on_invalid not in ("raise", "skip"):
        raise ValueError(f'on_invalid must be "raise" or "skip", got {on_invalid!r}')
    items, report, skipped = [], LoadReport(n_loaded=0), Counter()  # report filled in as rows are read
    for where, raw in rows:
        try:
            item = parse(raw)
        except InvalidRecord as err:
            message = f"{where}: {err.message}"
            if on_invalid == "raise":
                raise PreferenceDataError(message) from None
            skipped[err.reason] += 1
            if len(report.first_skipped) < MAX_SKIPPED_SHOWN:
                report.first_skipped.append(message)
            continue
        if item is not None:
            items.append(item)
    report.n_loaded, report.skipped = len(items), dict(skipped)
    if not items:
        why = f"all {report.n_skipped} rows were invalid: {report.skipped}" if skipped else "it has no rows"
        raise PreferenceDataError(f"{source}: no valid {what} ({why})")
    return items, report


def _parse_line(raw: bytes) -> PreferencePair:
    return parse_preference_record(decode_json_line(raw))


def load_preference_jsonl(
    path: str | os.PathLike, on_invalid: Literal["raise", "skip"] = "raise"
) -> tuple[list[PreferencePair], LoadReport]:
    """Read a preference JSONL file. Blank lines are ignored; bad rows raise or are skipped and counted."""
    if on_invalid not in ("raise", "skip"):
        raise ValueError(f'on_invalid must be "raise" or "skip", got {on_invalid!r}')
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference file not found: {path}")
    return collect_rows(read_lines(path.read_bytes(), str(path)), _parse_line, str(path), on_invalid)


def save_preference_jsonl(pairs: Iterable[PreferencePair], path: str | os.PathLike) -> None:
    """Write pairs as UTF-8 JSONL atomically (temp file + rename). Every pair is validated first, so that
    whatever this writes, `load_preference_jsonl` reads back identically."""
    path = Path(path)
    lines = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, PreferencePair):
            raise TypeError(f"pairs[{i}] must be a PreferencePair, got {type(pair).__name__}")
        record = asdict(pair)
        try:
            parse_preference_record(record)
        except InvalidRecord as err:
            raise PreferenceDataError(f"{path}: pairs[{i}]: {err.message}") from None
        lines.append(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    if not lines:
        raise PreferenceDataError(f"{path}: no pairs to save (an empty file would not load)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
