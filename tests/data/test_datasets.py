"""Loaders on local fixtures: HH-RLHF dialogues, column-mapped preference data, text datasets, folders and hub ids
read through `datasets`, sentence polarity; the worlds they build; an end-to-end run on HH with a tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from local_hub import hh_dialogue, hh_rows, save_tiny_causal_lm, write_jsonl
from tiny import compose_config

from shiftlab.config import (
    ColumnsConfig,
    DatasetConfig,
    OnInvalid,
    PreferenceFormat,
    TaskConfig,
    TaskKind,
)
from shiftlab.data.datasets import DatasetError, load_preference_split, load_preferences_file, load_text_split, split_hh
from shiftlab.data.pairs import InvalidRecord, PreferenceDataError
from shiftlab.stages.task import build_task
from shiftlab.validation import ConfigError

SENTENCE_POLARITY = Path(__file__).resolve().parents[3] / "shared" / "data" / "sentence-polarity"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Belt and braces: whatever the environment says, `datasets` stays off the network and out of ~/.cache."""
    import datasets
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def hh_task(path, **kw) -> TaskConfig:
    dataset = DatasetConfig(path=str(path), **kw.pop("dataset", {}))
    return TaskConfig(kind=TaskKind.preferences, format=PreferenceFormat.hh, dataset=dataset, n_eval_prompts=4, **kw)


# --- HH-RLHF ------------------------------------------------------------------------------------------------


def test_split_hh_cuts_after_the_last_assistant_marker():
    history = [("hi", "hello .")]
    chosen = hh_dialogue(history + [("is it good ?", "yes , very .")])
    rejected = hh_dialogue(history + [("is it good ?", "no .")])
    prompt, good, bad = split_hh(chosen, rejected)
    assert prompt == "\n\nHuman: hi\n\nAssistant: hello .\n\nHuman: is it good ?\n\nAssistant:"
    assert (good, bad) == (" yes , very .", " no .")  # the leading space stays with the response


@pytest.mark.parametrize(
    "chosen,rejected,reason,expected",
    [(hh_dialogue([("a ?", "x")]), hh_dialogue([("b ?", "y")]), "hh_prompt_mismatch", "differ from character 9"),
     ("\n\nHuman: a ?", hh_dialogue([("a ?", "y")]), "hh_no_assistant_turn", '"chosen" has no'),
     (hh_dialogue([("a ?", "y")]), "just text", "hh_no_assistant_turn", '"rejected" has no')],
)
def test_split_hh_rejects_rows_that_do_not_share_a_prompt(chosen, rejected, reason, expected):
    with pytest.raises(InvalidRecord) as info:
        split_hh(chosen, rejected)
    assert info.value.reason == reason and expected in info.value.message


@pytest.mark.parametrize("name", ["hh.jsonl", "hh.jsonl.gz"])
def test_hh_file_loads_as_pairs(tmp_path, name):
    rows = hh_rows(6)
    pairs, report, source = load_preference_split(hh_task(write_jsonl(tmp_path / name, rows)), "train")
    assert source.endswith(name) and report.n_loaded == 6
    assert [p.prompt + p.chosen for p in pairs] == [r["chosen"] for r in rows]
    assert [p.prompt + p.rejected for p in pairs] == [r["rejected"] for r in rows]
    assert all(p.prompt.endswith("\n\nAssistant:") and p.chosen.startswith(" ") for p in pairs)


def test_bad_hh_row_names_file_and_line_or_is_skipped_and_counted(tmp_path):
    good = hh_rows(4)
    mismatch = {"chosen": hh_dialogue([("a ?", "x")]), "rejected": hh_dialogue([("b ?", "y")])}
    same = {"chosen": hh_dialogue([("a ?", "x")]), "rejected": hh_dialogue([("a ?", "x")])}
    empty = {"chosen": hh_dialogue([("a ?", "x")]), "rejected": "\n\nHuman: a ?\n\nAssistant:"}
    path = write_jsonl(tmp_path / "hh.jsonl.gz", good[:2] + [mismatch, same, empty, {"chosen": 3, "rejected": "x"}] + good[2:])
    with pytest.raises(PreferenceDataError, match=r"hh\.jsonl\.gz:3: chosen and rejected must share the dialogue"):
        load_preference_split(hh_task(path), "train")
    pairs, report, _ = load_preference_split(hh_task(path, on_invalid=OnInvalid.skip), "train")
    assert len(pairs) == 4
    assert report.skipped == {"hh_prompt_mismatch": 1, "identical_responses": 1, "empty_response": 1, "bad_text": 1}


def test_hh_world_holds_out_prompts_with_their_pairs(tmp_path):
    world = build_task(hh_task(write_jsonl(tmp_path / "hh.jsonl", hh_rows(20))))
    assert len(world.eval_prompts) == 4 and not set(world.eval_prompts) & set(world.train_prompts)
    assert len(world.user_pairs) == 16 and world.user_pairs_info["held_out_pairs"] == 4
    assert world.corpus == [p.prompt + p.chosen for p in world.user_pairs]
    assert world.grammar is None


def test_hh_folder_with_splits_reads_through_datasets(tmp_path):
    write_jsonl(tmp_path / "hh" / "train.jsonl.gz", hh_rows(10))
    write_jsonl(tmp_path / "hh" / "test.jsonl.gz", hh_rows(30)[20:])
    world = build_task(hh_task(tmp_path / "hh", dataset={"eval_split": "test"}))
    assert len(world.user_pairs) == 10  # nothing held out: eval prompts come from the test split
    test_prompts = {split_hh(r["chosen"], r["rejected"])[0] for r in hh_rows(30)[20:]}
    assert len(world.eval_prompts) == 4 and set(world.eval_prompts) <= test_prompts
    assert world.user_pairs_info["path"].endswith("hh[train]")


def test_a_folder_row_error_names_split_and_index(tmp_path):
    write_jsonl(tmp_path / "hh" / "train.jsonl", hh_rows(3) + [{"chosen": hh_dialogue([("a", "b")]), "rejected": "no turn"}])
    with pytest.raises(PreferenceDataError, match=r"hh\[train\]\[3\]: \"rejected\" has no"):
        load_preference_split(hh_task(tmp_path / "hh"), "train")


# --- generic preference data and the column mapping ----------------------------------------------------------


def _orca_rows(n: int) -> list[dict]:
    return [{"system": "", "question": f"question {i} ?", "good": f" answer {i} .", "bad": f" no {i} ."} for i in range(n)]


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def columns_task(path, columns, **kw) -> TaskConfig:
    dataset = DatasetConfig(path=str(path), columns=ColumnsConfig(**columns))
    return TaskConfig(kind=TaskKind.preferences, dataset=dataset, n_eval_prompts=2, **kw)


MAPPING = {"prompt": "question", "chosen": "good", "rejected": "bad"}


def test_column_mapping_renames_parquet_columns_and_applies_the_template(tmp_path):
    path = _write_parquet(tmp_path / "orca.parquet", _orca_rows(5))
    pairs, report, _ = load_preference_split(columns_task(path, MAPPING, prompt_template="Q: {prompt}\nA:"), "train")
    assert report.n_loaded == 5
    assert (pairs[1].prompt, pairs[1].chosen, pairs[1].rejected) == ("Q: question 1 ?\nA:", " answer 1 .", " no 1 .")


def test_mapped_column_missing_from_parquet_fails_before_reading_rows(tmp_path):
    path = _write_parquet(tmp_path / "orca.parquet", _orca_rows(3))
    with pytest.raises(DatasetError) as info:
        load_preference_split(columns_task(path, {"prompt": "question", "chosen": "good", "rejected": "worse"}), "train")
    message = str(info.value)
    assert 'no column "worse" for field "rejected" (task.dataset.columns.rejected)' in message
    assert "orca.parquet" in message and "system, question, good, bad" in message


def test_unmapped_default_column_missing_says_how_to_map_it(tmp_path):
    path = _write_parquet(tmp_path / "orca.parquet", _orca_rows(3))
    with pytest.raises(DatasetError, match=r'no column "prompt" for field "prompt"; .*task\.dataset\.columns\.prompt=COLUMN'):
        load_preference_split(columns_task(path, {}), "train")


def test_mapped_column_missing_from_a_jsonl_row_names_the_line(tmp_path):
    rows = _orca_rows(3)
    del rows[1]["good"]
    path = write_jsonl(tmp_path / "orca.jsonl", rows)
    with pytest.raises(PreferenceDataError, match=r'orca\.jsonl:2: missing column "good" for field "chosen"'):
        load_preference_split(columns_task(path, MAPPING), "train")


def test_bad_value_in_a_mapped_column_names_the_row(tmp_path):
    rows = _orca_rows(4)
    rows[2]["good"] = None
    path = _write_parquet(tmp_path / "orca.parquet", rows)
    with pytest.raises(PreferenceDataError, match=r'orca\.parquet\[2\]: field "chosen" must be a non-empty string'):
        load_preference_split(columns_task(path, MAPPING), "train")
    pairs, report, _ = load_preference_split(columns_task(path, MAPPING, on_invalid=OnInvalid.skip), "train")
    assert len(pairs) == 3 and report.skipped == {"bad_text": 1}


@pytest.mark.parametrize(
    "overrides,key",
    [(["task=hh", "task.dataset.columns.prompt=q"], "task.dataset.columns.prompt"),
     (["task=imdb", "task.dataset.columns.chosen=c"], "task.dataset.columns.chosen"),
     (["task=preferences", "task.dataset.columns.chosen=question"], "task.dataset.columns"),
     (["task=imdb", "task.dataset.path=x.parquet"], "task.dataset.eval_split"),
     (["task=preferences", "task.dataset.path=null"], "task.dataset.path"),
     (["task=preferences", "task.preferences_path=x.jsonl"], "task.preferences_path"),
     (["task=preferences", "task.prompt_template=Q:"], "task.prompt_template")],
)
def test_bad_dataset_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        compose_config(overrides, tiny=False)


def test_misspelt_column_field_fails_at_start_up():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["task=preferences", "task.dataset.columns.promt=question"], tiny=False)
    assert "promt" in str(err.value) + str(err.value.__cause__)


def test_hub_id_goes_to_datasets_with_name_data_dir_and_split(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, data_dir=None, split=None):
        calls.append((path, name, data_dir, split))
        return datasets.Dataset.from_list(hh_rows(5))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = hh_task("Anthropic/hh-rlhf", dataset={"data_dir": "harmless-base", "max_rows": 3})
    pairs, report, source = load_preference_split(task, "train")
    assert calls == [("Anthropic/hh-rlhf", None, "harmless-base", "train")]
    assert len(pairs) == 3 and source == "Anthropic/hh-rlhf[train]"


def test_unreachable_hub_id_fails_with_one_clear_message(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'Anthropic/hh-rlhf' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DatasetError, match=r"task\.dataset\.path='Anthropic/hh-rlhf' .* needs the network"):
        load_preference_split(hh_task("Anthropic/hh-rlhf"), "train")


def test_missing_local_file_is_not_mistaken_for_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="hh.jsonl.gz"):
        load_preference_split(hh_task(tmp_path / "hh.jsonl.gz"), "train")


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".parquet"])
def test_preferences_path_reads_gzip_and_parquet(tmp_path, suffix):
    rows = [{"prompt": f"the movie {i}", "chosen": " is great .", "rejected": " is bad ."} for i in range(3)]
    path = write_jsonl(tmp_path / f"p{suffix}", rows) if suffix == ".jsonl.gz" else _write_parquet(tmp_path / "p.parquet", rows)
    pairs, report = load_preferences_file(str(path), OnInvalid.error)
    assert [p.prompt for p in pairs] == [r["prompt"] for r in rows] and report.n_loaded == 3
    with pytest.raises(DatasetError, match="expected a local .jsonl, .jsonl.gz or .parquet"):
        load_preferences_file("Anthropic/hh-rlhf", OnInvalid.error)


# --- text datasets (IMDb-style) and sentence polarity ---------------------------------------------------------


REVIEWS = [f"this film number {i} was really quite good<br /><br />and the cast was fine too ." for i in range(30)]


def test_text_dataset_applies_replacements_and_the_text_column(tmp_path):
    rows = [{"review": text, "label": 1} for text in REVIEWS[:3]] + [{"review": "   ", "label": 0}]
    task = TaskConfig(kind=TaskKind.text, dataset=DatasetConfig(path=str(write_jsonl(tmp_path / "r.jsonl", rows)),
                      columns=ColumnsConfig(text="review")), text_replace={"<br />": " "})
    texts, report, _ = load_text_split(task, "train")
    assert texts == [t.replace("<br />", " ") for t in REVIEWS[:3]]  # the blank review is dropped, not an error
    bad = write_jsonl(tmp_path / "bad.jsonl", rows[:2] + [{"review": 7}])
    with pytest.raises(PreferenceDataError, match=r'bad\.jsonl:3: field "text" must be a string'):
        load_text_split(TaskConfig(kind=TaskKind.text, dataset=DatasetConfig(path=str(bad), columns=ColumnsConfig(text="review"))), "train")


def test_imdb_task_on_a_local_parquet_builds_prefix_prompts(tmp_path):
    path = _write_parquet(tmp_path / "imdb.parquet", [{"text": t, "label": 1} for t in REVIEWS])
    cfg = compose_config(["task=imdb", f"task.dataset.path={path}", "task.dataset.eval_split=null", "task.n_eval_prompts=4", "eval.n_prompts=4"], tiny=False)
    world = build_task(cfg.task)
    assert not any("<br />" in text for text in world.corpus)
    assert len(world.eval_prompts) == 4
    cleaned = [" ".join(r.replace("<br />", " ").split()) for r in REVIEWS]
    for prompt in world.train_prompts + world.eval_prompts:
        assert 2 <= len(prompt.split()) <= 8 and any(text.startswith(prompt) for text in cleaned)


def test_txt_file_is_one_text_a_line(tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_text("a fine film .\n\nan awful film .\n")
    texts, _, _ = load_text_split(TaskConfig(kind=TaskKind.text, dataset=DatasetConfig(path=str(path))), "train")
    assert texts == ["a fine film .", "an awful film ."]


def test_sentence_polarity_world_from_the_shared_directory():
    if not SENTENCE_POLARITY.is_dir():
        pytest.skip(f"sentence-polarity data not found at {SENTENCE_POLARITY} (a clone without ../shared)")
    cfg = compose_config(["task=sentence_polarity", f"task.corpus_dir={SENTENCE_POLARITY}"], tiny=False)
    world = build_task(cfg.task)
    assert len(world.corpus) > 10_000 - 2 * cfg.task.n_eval_prompts * 4 and len(world.eval_prompts) > 100
    assert world.grammar is None and world.user_pairs is None


# --- end to end: HH fixture + a tiny pretrained checkpoint ------------------------------------------------------


@pytest.mark.slow
def test_hh_run_with_a_tiny_pretrained_model_trains_and_writes_metrics(tmp_path):
    import pandas as pd

    from shiftlab.experiment.lifecycle import run

    hh = write_jsonl(tmp_path / "hh.jsonl.gz", hh_rows(40))
    model_dir = save_tiny_causal_lm(tmp_path / "neox", arch="gpt_neox")
    cfg = compose_config([f"cache_dir={tmp_path / 'cache'}", "task=hh", f"task.dataset.path={hh}", "task.dataset.eval_split=null",
                          f"model.name_or_path={model_dir}", "model.dtype=float32", "sft.steps=3", "sft.lr=1e-3"])
    run_dir = run(cfg, tmp_path / "run")
    metrics = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    assert metrics["loss"].notna().sum() == 4 and metrics["eval/reward"].notna().sum() == 3
    assert "eval/off_support" not in metrics.columns  # no grammar: its exact metrics simply do not appear
    assert "eval/gold_reward" not in metrics.columns and metrics["eval/distinct_1"].notna().sum() == 3  # no gold; text quality on every task
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    info = next(e for e in events if e["event"] == "preference_set")
    assert info["pairs"] == 40 - 16 and info["held_out_pairs"] == 16
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
