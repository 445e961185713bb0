"""Oracles built from config: VADER, a tiny locally built sequence classifier (batched, truncated, label lookup),
and a user function named "package.module:attr" with its checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from local_hub import save_tiny_classifier
from tiny import compose_config
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from shiftlab.config import OracleConfig, OracleKind, TruncationSide
from shiftlab.labels.oracles import ClassifierOracle, FunctionOracle, VaderOracle, build_oracle
from shiftlab.labels.oracles import VaderOracle as WorldVader
from shiftlab.validation import ConfigError

TEXTS = ["the movie was great .", "the movie was awful .", "great", "the movie was great . " * 40, "a"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("classifier"))


def classifier(directory, **kw) -> ClassifierOracle:
    oracle = build_oracle(OracleConfig(kind=OracleKind.hf_classifier, model=str(directory), **{"label": "POSITIVE", **kw}))
    assert isinstance(oracle, ClassifierOracle)
    return oracle


def test_vader_from_config_is_the_world_oracle():
    oracle = build_oracle(OracleConfig())
    assert isinstance(oracle, VaderOracle) and WorldVader is VaderOracle
    assert oracle(["great", "awful"]).tolist()[0] > 0 > oracle(["great", "awful"]).tolist()[1]


def test_classifier_gives_the_label_probability_batched(classifier_dir):
    one_batch = classifier(classifier_dir, batch_size=64)(TEXTS)
    small_batches = classifier(classifier_dir, batch_size=2)(TEXTS)
    assert one_batch.dtype == np.float64 and one_batch.shape == (len(TEXTS),)
    assert ((one_batch > 0) & (one_batch < 1)).all()
    np.testing.assert_allclose(small_batches, one_batch, atol=1e-5)  # padding never changes a score
    negative = classifier(classifier_dir, label="NEGATIVE")(TEXTS)
    np.testing.assert_allclose(one_batch + negative, 1.0, atol=1e-6)
    assert classifier(classifier_dir)([]).shape == (0,)


def test_classifier_matches_the_model_run_by_hand(classifier_dir):
    tokenizer = AutoTokenizer.from_pretrained(classifier_dir)
    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS[:1], return_tensors="pt")).logits
    expected = torch.softmax(logits, -1)[0, 1].item()
    assert classifier(classifier_dir)(TEXTS[:1])[0] == pytest.approx(expected, abs=1e-6)


def test_classifier_truncates_on_the_configured_side(classifier_dir):
    start, end = "the movie was great . " * 5, "the movie was awful . " * 5
    texts = [start + end, start + "great " * 30 + end]
    keep_start = classifier(classifier_dir, max_length=8, truncation_side=TruncationSide.right)(texts)
    keep_end = classifier(classifier_dir, max_length=8, truncation_side=TruncationSide.left)(texts)
    assert keep_start[0] == pytest.approx(keep_start[1], abs=1e-6)  # same first 8 tokens
    assert keep_end[0] == pytest.approx(keep_end[1], abs=1e-6)  # same last 8 tokens
    assert keep_start[0] != pytest.approx(keep_end[0], abs=1e-6)


def test_one_output_reward_model_scores_by_its_logit(tmp_path):
    directory = save_tiny_classifier(tmp_path / "rm", labels=None)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    with torch.no_grad():
        expected = model(**tokenizer(TEXTS[:1], return_tensors="pt")).logits[0, 0].item()
    assert classifier(directory, label=None)(TEXTS[:1])[0] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="one output .* leave oracle.label unset"):
        classifier(directory, label="POSITIVE")


@pytest.mark.parametrize(
    "label,expected",
    [("positive", r"'positive' is not a label .* its labels are 0=NEGATIVE, 1=POSITIVE"),
     (None, r"has 2 labels \(0=NEGATIVE, 1=POSITIVE\): set oracle.label")],
)
def test_classifier_label_errors_list_the_labels(classifier_dir, label, expected):
    with pytest.raises(ValueError, match=expected):
        classifier(classifier_dir, label=label)


def test_classifier_label_may_be_an_index(classifier_dir):
    np.testing.assert_allclose(classifier(classifier_dir, label="1")(TEXTS), classifier(classifier_dir)(TEXTS))


def test_missing_classifier_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="oracle.model=.*could not load a sequence classifier"):
        classifier(tmp_path / "nothing-here")


def word_count(texts, scale=1.0):
    return [scale * len(t.split()) for t in texts]


def wrong_shape(texts):
    return np.zeros((len(texts), 2))


def with_nan(texts):
    return [float("nan")] * len(texts)


NOT_CALLABLE = 3


def test_function_oracle_is_called_with_its_kwargs():
    oracle = build_oracle(OracleConfig(kind=OracleKind.function, function="test_oracles:word_count", kwargs={"scale": 2.0}))
    scores = oracle(["a b", "a b c"])
    assert isinstance(oracle, FunctionOracle) and scores.dtype == np.float64 and scores.tolist() == [4.0, 6.0]


def test_the_example_function_config_composes_and_scores():
    oracle = build_oracle(compose_config(["oracle=function"], tiny=False).oracle)
    assert oracle(["great"])[0] > 0


@pytest.mark.parametrize(
    "target,expected",
    [("test_oracles", 'must look like "package.module:attr"'),
     ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
     ("test_oracles:missing", "has no attribute 'missing'"),
     ("test_oracles:NOT_CALLABLE", "names a int, not a callable")],
)
def test_bad_function_names_fail_at_build(target, expected):
    with pytest.raises(ValueError, match=expected):
        FunctionOracle(target, {})


@pytest.mark.parametrize("target,expected", [("test_oracles:wrong_shape", r"shape \(2, 2\) for 2 texts"),
                                             ("test_oracles:with_nan", "NaN or infinite")])
def test_bad_function_output_fails_at_call(target, expected):
    with pytest.raises(ValueError, match=expected):
        FunctionOracle(target, {})(["a", "b"])


@pytest.mark.parametrize(
    "overrides,key",
    [(["oracle=hf_classifier", "oracle.model=null"], "oracle.model"), (["oracle=function", "oracle.function=mod.f"], "oracle.function"),
     (["oracle=hf_classifier", "oracle.batch_size=0"], "oracle.batch_size")],
)
def test_bad_oracle_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        compose_config(overrides, tiny=False)
