"""Texts and preference pairs from a hub dataset or a local file, validated by the rules of `shiftlab.data.pairs`.

Where rows come from (`read_rows`), and how a bad row is named in an error:
- a local ``.jsonl`` / ``.jsonl.gz``: one JSON object a line, ``file:line`` (1-based);
- a local ``.parquet``: ``file[i]`` (0-based, as in ``table.slice(i, 1)``);
- a local ``.txt`` / ``.txt.gz``: one text a line in a column named ``text``, ``file:line``;
- a local folder of data files, or a hub id: through `datasets.load_dataset`, ``id[split][i]``. Hub access obeys
  ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` and the Hugging Face cache; local files never touch the network.

A column mapping (``task.dataset.columns.FIELD=COLUMN``) renames the dataset's columns to the fields a task
reads (`shiftlab.config.dataset_fields`); a mapped column the dataset lacks fails before any row is read when the
columns are known up front (Parquet, hub), else on the first row without it.

Pair formats: ``columns`` reads prompt / chosen / rejected; ``hh`` (Anthropic HH-RLHF) cuts both dialogues after
their last assistant marker — the prompt is that prefix and must be the same in both, the responses are the rest
(keeping their leading space). Every pair then passes `parse_preference_record`, the JSONL rules.
"""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftlab.config import (
    LOCAL_FILE_SUFFIXES,
    ColumnsConfig,
    DatasetConfig,
    OnInvalid,
    PreferenceFormat,
    TaskConfig,
    dataset_fields,
)
from shiftlab.data.pairs import (
    InvalidRecord,
    LoadReport,
    PreferencePair,
    collect_rows,
    decode_json_line,
    load_preference_jsonl,
    parse_preference_record,
    read_lines,
)


class DatasetError(ValueError):
    """A dataset cannot be read as configured (missing column, unreadable source); the message names it."""


@dataclass
class Rows:
    source: str  # names the dataset in messages
    items: Iterable[tuple[str, Any]]  # (where, raw row)
    decode: Callable[[Any], Any]  # raw -> row; JSON lines decode lazily so that a bad line is one bad row
    columns: list[str] | None  # known before reading (Parquet, hub), else None and checked row by row


def is_local(path: str) -> bool:
    """A path that exists, or one that is plainly meant as a file; anything else is taken for a hub id."""
    return Path(path).expanduser().exists() or path.endswith(LOCAL_FILE_SUFFIXES) or path.startswith((".", "/", "~"))


def read_rows(spec: DatasetConfig, split: str) -> Rows:
    path = spec.path or ""
    local = Path(path).expanduser()
    if is_local(path) and not local.is_dir():
        if not local.is_file():
            raise FileNotFoundError(f"dataset file not found: {path} (expected {', '.join(LOCAL_FILE_SUFFIXES)})")
        rows = _read_local_file(local)
    else:
        rows = _read_with_datasets(spec, split)
    if spec.max_rows is not None:
        rows.items = itertools.islice(rows.items, spec.max_rows)
    return rows


def _read_local_file(path: Path) -> Rows:
    name = str(path)
    if name.endswith((".jsonl", ".jsonl.gz")):
        data = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
        return Rows(name, read_lines(data, name), decode_json_line, None)
    if name.endswith((".txt", ".txt.gz")):
        data = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
        # like the sentence-polarity files: undecodable bytes become U+FFFD rather than failing the corpus
        return Rows(name, read_lines(data, name), lambda raw: {"text": raw.decode("utf-8", "replace")}, ["text"])
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ImportError("reading Parquet needs pyarrow: pip install pyarrow") from err
        table = pq.read_table(path)
        items = ((f"{name}[{i}]", row) for i, row in enumerate(table.to_pylist()))
        return Rows(name, items, lambda row: row, list(table.column_names))
    raise DatasetError(f"{path}: unknown file type (expected {', '.join(LOCAL_FILE_SUFFIXES)}, or a folder)")


def _read_with_datasets(spec: DatasetConfig, split: str) -> Rows:
    try:
        import datasets
    except ImportError as err:
        raise ImportError(f"reading {spec.path!r} (a hub id or a folder) needs the datasets package: pip install datasets") from err
    try:
        dataset = datasets.load_dataset(spec.path, spec.name, data_dir=spec.data_dir, split=split)
    except (OSError, ValueError) as err:  # ConnectionError is an OSError; unknown splits and configs are ValueErrors
        raise DatasetError(
            f"task.dataset.path={spec.path!r} (name={spec.name!r}, data_dir={spec.data_dir!r}, split={split!r}) "
            f"could not be loaded — a hub id needs the network or a warm Hugging Face cache: {err}"
        ) from err
    if spec.max_rows is not None:
        dataset = dataset.select(range(min(spec.max_rows, len(dataset))))
    source = f"{spec.path}[{split}]"
    return Rows(source, ((f"{source}[{i}]", row) for i, row in enumerate(dataset)), lambda row: row, list(dataset.column_names))


def _column_picker(rows: Rows, fields: tuple[str, ...], columns: ColumnsConfig) -> Callable[[Any], dict]:
    """row -> the row with each field's mapped column under the field's name (other keys kept, e.g. rewards)."""
    mapping = {f: getattr(columns, f) or f for f in fields}

    def via(field: str) -> str:
        return f" (task.dataset.columns.{field})" if mapping[field] != field else ""

    if rows.columns is not None:
        for field, column in mapping.items():
            if column not in rows.columns:
                raise DatasetError(
                    f'{rows.source}: no column "{column}" for field "{field}"{via(field)}; its columns are '
                    f"{', '.join(rows.columns)} — map one with task.dataset.columns.{field}=COLUMN"
                )

    def pick(raw: Any) -> dict:
        row = rows.decode(raw)
        if not isinstance(row, dict):
            raise InvalidRecord("not_object", f"row must be an object with columns {', '.join(mapping.values())}")
        out = dict(row)
        for field, column in mapping.items():
            if column not in row:
                raise InvalidRecord("missing_field", f'missing column "{column}" for field "{field}"{via(field)}')
            out[field] = row[column]
        return out

    return pick


def split_hh(chosen: str, rejected: str, marker: str = "\n\nAssistant:") -> tuple[str, str, str]:
    """(prompt, chosen response, rejected response) of an HH-RLHF row, or raise `InvalidRecord`.

    The prompt is each dialogue up to and including its last `marker`; both dialogues must give the same one.
    """
    cut_chosen, cut_rejected = chosen.rfind(marker), rejected.rfind(marker)
    if cut_chosen < 0 or cut_rejected < 0:
        which = "chosen" if cut_chosen < 0 else "rejected"
        raise InvalidRecord("hh_no_assistant_turn", f'"{which}" has no {marker!r} turn to split the prompt at')
    prompt = chosen[: cut_chosen + len(marker)]
    if rejected[: cut_rejected + len(marker)] != prompt:
        at = next((i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected)))
        raise InvalidRecord(
            "hh_prompt_mismatch",
            f"chosen and rejected must share the dialogue up to their last {marker!r}, but differ from character "
            f"{at}: {chosen[at:at + 24]!r} vs {rejected[at:at + 24]!r}",
        )
    return prompt, chosen[len(prompt) :], rejected[len(prompt) :]


def _pair_parser(task: TaskConfig, pick: Callable[[Any], dict]) -> Callable[[Any], PreferencePair]:
    def parse(raw: Any) -> PreferencePair:
        row = pick(raw)
        if task.format is PreferenceFormat.hh:
            for key in ("chosen", "rejected"):
                if not isinstance(row[key], str):
                    raise InvalidRecord("bad_text", f'field "{key}" must be a dialogue string, got {type(row[key]).__name__}')
            row["prompt"], row["chosen"], row["rejected"] = split_hh(row["chosen"], row["rejected"], task.assistant_marker)
        if isinstance(row.get("prompt"), str):
            row["prompt"] = task.prompt_template.replace("{prompt}", row["prompt"])
        return parse_preference_record(row)

    return parse


def _on_invalid(task: TaskConfig) -> str:
    return "raise" if task.on_invalid is OnInvalid.error else "skip"


def load_preference_split(task: TaskConfig, split: str) -> tuple[list[PreferencePair], LoadReport, str]:
    """The pairs of one split of task.dataset; returns (pairs, report, source name)."""
    rows = read_rows(task.dataset, split)
    parse = _pair_parser(task, _column_picker(rows, dataset_fields(task), task.dataset.columns))
    pairs, report = collect_rows(rows.items, parse, rows.source, _on_invalid(task))
    return pairs, report, rows.source


def load_text_split(task: TaskConfig, split: str) -> tuple[list[str], LoadReport, str]:
    """The texts of one split of task.dataset, after task.text_replace; blank texts are dropped."""
    rows = read_rows(task.dataset, split)
    pick = _column_picker(rows, ("text",), task.dataset.columns)

    def parse(raw: Any) -> str | None:
        text = pick(raw)["text"]
        if not isinstance(text, str):
            raise InvalidRecord("bad_text", f'field "text" must be a string, got {type(text).__name__}')
        for old, new in task.text_replace.items():
            text = text.replace(old, new)
        return text.strip() or None

    texts, report = collect_rows(rows.items, parse, rows.source, _on_invalid(task), what="texts")
    return texts, report, rows.source


def load_preferences_file(path: str, on_invalid: OnInvalid) -> tuple[list[PreferencePair], LoadReport]:
    """task.preferences_path: a local .jsonl (the strict JSONL loader), .jsonl.gz or .parquet of prompt/chosen/rejected."""
    mode = "raise" if on_invalid is OnInvalid.error else "skip"
    if path.endswith(".jsonl"):
        return load_preference_jsonl(path, on_invalid=mode)
    if not path.endswith((".jsonl.gz", ".parquet")):
        raise DatasetError(
            f"task.preferences_path={path!r}: expected a local .jsonl, .jsonl.gz or .parquet file "
            "(for a hub dataset or renamed columns use task=preferences with task.dataset.path)"
        )
    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"preference file not found: {path}")
    rows = _read_local_file(Path(path).expanduser())
    parse = _pair_parser(TaskConfig(), _column_picker(rows, ("prompt", "chosen", "rejected"), ColumnsConfig()))
    return collect_rows(rows.items, parse, rows.source, mode)
