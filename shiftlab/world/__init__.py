"""The embedded default: shiftlab's own review grammar (generate, and score any text's exact log-probability),
and the corpus helpers that cut reviews into prompts."""

from shiftlab.world.corpus import load_sentence_polarity, make_prompts, split_texts
from shiftlab.world.grammar import ReviewGrammar

__all__ = ["ReviewGrammar", "load_sentence_polarity", "make_prompts", "split_texts"]
