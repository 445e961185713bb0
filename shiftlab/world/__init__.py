"""The embedded default world: a review grammar with exact log-probabilities, oracle rewards, corpora."""

from shiftlab.world.corpus import load_sentence_polarity, make_prompts, split_texts
from shiftlab.world.grammar import ReviewGrammar
from shiftlab.world.oracle import VaderOracle

__all__ = ["ReviewGrammar", "VaderOracle", "load_sentence_polarity", "make_prompts", "split_texts"]
