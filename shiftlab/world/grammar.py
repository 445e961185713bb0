"""A stochastic finite-state grammar of short movie reviews with exact probabilities.

Structure. A review has a latent *mood* (very negative .. very positive), drawn once and carried in
every state. It is an optional opener (a framing phrase such as "overall ," or a neutral sentence about
the plot, the director, the runtime), then 2-4 evaluative clauses, then "." or "!", optionally followed
by a recommendation sentence. Each clause draws its polarity from the mood: "the acting is not very
good", "i really loved the soundtrack", "it is an extremely dull film", "this is the best movie i have
seen". Polarity comes from VADER-lexicon adjectives of graded strength, boosters and dampeners ("very",
"somewhat") and negation ("not great", "never boring"). Clauses of opposite polarity are joined by
", but", of equal polarity by ", and", or split into sentences, so sentiment is never one keyword.

The grammar is written as weighted choices of phrases and compiled to a `WordAutomaton`
(shiftlab.world.automaton), which samples and scores reviews exactly, conditioned on
min_words <= length <= max_words.
"""

from __future__ import annotations

import numpy as np

from shiftlab.world.automaton import STOP, PhraseBuilder, WordAutomaton

MOOD_WEIGHTS = (0.2, 0.2, 0.2, 0.2, 0.2)
# Per mood, very negative .. very positive: the chance that a clause is positive, and the share of strong
# words (strong adjectives, boosters, "!") over mild ones (mild adjectives, dampeners, negation).
MOOD_POSITIVE_RATE = (0.05, 0.25, 0.5, 0.75, 0.95)
MOOD_INTENSITY = (0.8, 0.25, 0.35, 0.25, 0.8)
END_AFTER_CLAUSE = (0.0, 0.45, 0.6, 1.0)  # chance the review ends after clause k = 1..4

POSITIVE_STRONG = ("wonderful", "brilliant", "excellent", "amazing", "fantastic", "superb",
                   "outstanding", "beautiful", "perfect", "great", "gorgeous", "delightful", "lovely")
POSITIVE_MILD = ("good", "nice", "fine", "pleasant", "fun", "funny", "enjoyable", "clever",
                 "interesting", "sweet", "entertaining", "solid", "smart", "fresh", "original")
NEGATIVE_STRONG = ("awful", "terrible", "horrible", "dreadful", "painful", "bad", "pathetic",
                   "stupid", "ugly", "disappointing")
NEGATIVE_MILD = ("boring", "dull", "weak", "messy", "lame", "annoying", "confusing", "lazy",
                 "tired", "flawed", "forced")
BOOSTERS = ("very", "really", "extremely", "incredibly", "so", "totally", "quite")
DAMPENERS = ("somewhat", "slightly", "fairly", "mildly")
SINGULAR_NOUNS = ("acting", "plot", "script", "story", "ending", "dialogue", "soundtrack", "music",
                  "pacing", "direction", "film", "movie", "cinematography", "first half", "final act",
                  "editing", "premise", "camera work", "lead actor")
PLURAL_NOUNS = ("characters", "performances", "actors", "songs", "visuals", "action scenes", "effects")
FILM_NOUNS = ("film", "movie", "drama", "sequel", "debut", "picture", "remake", "story")
NEUTRAL_FRAMES = ("overall ,", "all in all ,", "in my opinion ,", "frankly ,", "for me ,", "in short ,",
                  "at first glance ,", "on paper ,", "in the end ,", "by the end ,", "as a whole ,",
                  "to me ,", "if you ask me ,", "after all the hype ,", "from start to finish ,",
                  "first of all ,")
CHARACTERS = ("a young detective", "an old teacher", "two brothers", "a single mother",
              "a retired soldier", "a group of students", "a taxi driver")
PLACES = ("a small town", "new york", "paris", "the desert", "the future", "outer space",
          "a high school", "the sixties")
# Neutral sentences: each part is a phrase or a tuple of alternative phrases.
FILLERS = (("the plot follows", CHARACTERS, "in", PLACES), ("the plot follows", CHARACTERS),
           ("the film is set in", PLACES), ("the director also wrote the script",),
           ("the director shot it in", PLACES), ("it runs about", ("two hours", "ninety minutes")),
           ("i saw it", ("last night", "on a plane", "with my family", "at home")),
           ("it is based on a", ("book", "short story", "comic book")), ("the film stars", CHARACTERS))
POSITIVE_CLOSERS = ("i would recommend it", "i highly recommend it", "do not miss it", "go see it",
                    "it is worth seeing")
NEGATIVE_CLOSERS = ("i would not recommend it", "avoid it", "skip it", "what a waste of time",
                    "do not bother")


class _Builder(PhraseBuilder):
    """A phrase builder that also grades a choice between strong and mild phrasings."""

    def add_graded(self, src: int, dst: int, strong: tuple[str, ...], mild: tuple[str, ...],
                   intensity: float, weight: float = 1.0) -> None:
        """Split `weight` between strong and mild phrases by `intensity`."""
        if strong and intensity > 0:
            self.add(src, strong, dst, weight * intensity)
        if mild and intensity < 1:
            self.add(src, mild, dst, weight * (1.0 - intensity))


def _add_adjective(b: _Builder, src: int, dst: int, positive: bool, intensity: float,
                   article: bool = False, negated: bool = False) -> None:
    """[a|an] [booster|dampener] adjective; an article agrees with the word right after it.

    After a negation only boosters are used ("not very good"): "not somewhat good" is not English.
    """
    strong, mild = (POSITIVE_STRONG, POSITIVE_MILD) if positive else (NEGATIVE_STRONG, NEGATIVE_MILD)
    modified, boost = (0.3, 1.0) if negated else (0.5, intensity)
    adjectives = b.state()
    b.add_graded(adjectives, dst, strong, mild, intensity)
    if not article:
        b.add(src, "", adjectives, 1.0 - modified)
        b.add_graded(src, adjectives, BOOSTERS, DAMPENERS, boost, weight=modified)
        return
    for word in ("a", "an"):
        bare = b.then(src, word, (1.0 - modified) / 2)
        b.add_graded(bare, dst, _agreeing(word, strong), _agreeing(word, mild), intensity)
        boosters = tuple(f"{word} {w}" for w in _agreeing(word, BOOSTERS))
        dampeners = tuple(f"{word} {w}" for w in _agreeing(word, DAMPENERS))
        b.add_graded(src, adjectives, boosters, dampeners, boost, weight=modified / 2)


def _agreeing(article: str, words: tuple[str, ...]) -> tuple[str, ...]:
    """The words that may follow `article`: 'an' before a vowel, 'a' before a consonant."""
    return tuple(w for w in words if (w[0] in "aeiou") == (article == "an"))


def _add_clause(b: _Builder, src: int, dst: int, positive: bool, intensity: float) -> None:
    """One evaluative clause of the given polarity, in one of four forms."""
    singular, plural = _add_subject(b, b.then(src, "", 0.5))
    verb, negated, negation_rate = b.state(), b.state(), 0.4 - 0.2 * intensity
    b.add(singular, ("is", "was", "feels", "seems"), verb, 1.0 - negation_rate)
    b.add(plural, ("are", "were", "feel", "seem"), verb, 1.0 - negation_rate)
    b.add(singular, ("is not", "was not", "is never", "never feels"), negated, negation_rate)
    b.add(plural, ("are not", "were not", "are never", "never feel"), negated, negation_rate)
    _add_adjective(b, verb, dst, positive, intensity)
    if positive:  # "not bad", "never boring" read as mild praise
        b.add(negated, NEGATIVE_MILD + ("bad",), dst)
    else:  # "not very good", "never funny"
        _add_adjective(b, negated, dst, positive=True, intensity=0.2, negated=True)

    feeling = b.state()
    strong = ("loved", "really loved", "absolutely loved") if positive else ("hated", "really hated")
    mild = ("liked", "enjoyed", "admired") if positive else (
        "disliked", "did not like", "did not enjoy", "never liked")
    b.add_graded(b.then(src, "i", 0.25), feeling, strong, mild, intensity)
    for after_object in _add_subject(b, feeling):
        b.add(after_object, "", dst)

    it_is, noun = b.then(src, ("it is", "it was", "this is"), 0.2), b.state()
    b.add(noun, FILM_NOUNS, dst)
    _add_adjective(b, it_is, noun, positive, intensity, article=True)
    _add_adjective(b, b.then(it_is, "not", 0.2), noun, not positive, 0.2, article=True, negated=True)

    extreme = "best" if positive else "worst"
    b.add(src, (f"it is one of the {extreme} films of the year",
                f"this is the {extreme} movie i have seen"), dst, 0.05 * intensity)


def _add_subject(b: _Builder, src: int) -> tuple[int, int]:
    """'the acting', 'this film', 'the characters': returns the states after a singular / plural."""
    the, singular, plural = b.then(src, "the", 0.85), b.state(), b.state()
    b.add(the, SINGULAR_NOUNS, singular, len(SINGULAR_NOUNS))
    b.add(the, PLURAL_NOUNS, plural, len(PLURAL_NOUNS))
    b.add(src, ("this film", "this movie"), singular, 0.15)
    return singular, plural


def _add_filler(b: _Builder, src: int, dst: int, weight: float) -> None:
    """A neutral sentence followed by '.'."""
    for parts in FILLERS:
        state = b.then(src, "", weight / len(FILLERS))
        for part in parts:
            state = b.then(state, part)
        b.add(state, ".", dst)


def _add_review(b: _Builder, start: int, mood: int, weight: float) -> None:
    rate, intensity = MOOD_POSITIVE_RATE[mood], MOOD_INTENSITY[mood]
    clause_rate = {True: rate, False: 1.0 - rate}
    opener, first = b.then(start, "", weight), b.state()
    b.add(opener, "", first, 0.4)
    b.add(opener, NEUTRAL_FRAMES, first, 0.3)
    b.add(opener, ("sadly ,", "unfortunately ,"), first, 0.1 * (1.0 - rate))
    b.add(opener, ("happily ,", "thankfully ,"), first, 0.1 * rate)
    _add_filler(b, opener, first, 0.25)

    entries = [{p: b.state() for p in (True, False)} for _ in END_AFTER_CLAUSE]
    for polarity, entry in entries[0].items():
        b.add(first, "", entry, clause_rate[polarity])
    ending = b.state()
    for k, end_rate in enumerate(END_AFTER_CLAUSE):
        for polarity, entry in entries[k].items():
            after = b.state()
            _add_clause(b, entry, after, polarity, intensity)
            b.add(after, "", ending, end_rate)
            if end_rate < 1.0:
                _add_connectors(b, after, polarity, entries[k + 1], clause_rate, 1.0 - end_rate)
    _add_ending(b, ending, rate, intensity)


def _add_connectors(b: _Builder, src: int, polarity: bool, entries: dict, clause_rate: dict,
                    weight: float) -> None:
    """', but' joins a contrasting clause, ', and' an agreeing one; '.' starts a new sentence."""
    for next_polarity, entry in entries.items():
        connect = b.then(src, "", weight * clause_rate[next_polarity])
        b.add(connect, ", but" if next_polarity != polarity else ", and", entry, 0.45)
        b.add(connect, ".", entry, 0.45)
        _add_filler(b, b.then(connect, ".", 0.1), entry, 1.0)


def _add_ending(b: _Builder, src: int, rate: float, intensity: float) -> None:
    b.add(src, ".", STOP, 0.7)
    b.add(src, "!", STOP, 0.3 * intensity)
    closer = b.then(src, ".", 0.3)
    for closers, share in ((POSITIVE_CLOSERS, rate), (NEGATIVE_CLOSERS, 1.0 - rate)):
        b.add(closer, tuple(c + " ." for c in closers), STOP, share)
        b.add(closer, tuple(c + " !" for c in closers), STOP, share * 0.3 * intensity)


class ReviewGrammar:
    """Sample short movie reviews and score texts exactly under the grammar (see module docstring)."""

    min_words = 10
    max_words = 40

    def __init__(self, mood_weights: tuple[float, ...] = MOOD_WEIGHTS) -> None:
        builder = _Builder()
        start = builder.state()
        for mood, weight in enumerate(mood_weights):
            _add_review(builder, start, mood, weight)
        self._automaton = WordAutomaton.compile(builder, start, self.min_words, self.max_words)
        self.vocabulary: tuple[str, ...] = self._automaton.vocabulary
        self.mood_weights: tuple[float, ...] = tuple(mood_weights)

    @property
    def n_states(self) -> int:
        return self._automaton.n_states

    @property
    def log_z(self) -> float:
        """log P(min_words <= length <= max_words) before conditioning; mixing grammars of one mood each needs it."""
        return self._automaton.log_z

    def prefix_logprobs(self, text: str) -> np.ndarray:
        """log P(a review starts with the first k words), k = 1..n; -inf from the first bad word on."""
        return self._automaton.prefix_logprobs(text.split())

    def prefix_logprob(self, text: str) -> float:
        """log P(a review starts with these whitespace-separated words); 0.0 for the empty prefix."""
        return self._automaton.prefix_logprob(text.split())

    def logprob(self, text: str) -> float:
        """log P(sample returns exactly this text), compared word by word; -inf if impossible."""
        return self._automaton.logprob(text.split())

    def sample(self, n: int, rng: np.random.Generator) -> list[str]:
        """n reviews drawn i.i.d.; with equal seeds sample(n) is a prefix of sample(m > n)."""
        return self._automaton.sample(n, rng)
