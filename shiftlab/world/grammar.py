"""A stochastic finite-state grammar of short movie reviews with exact probabilities.

Structure. A review has a latent *mood* (very negative .. very positive), drawn once and carried in
every state. It is an optional opener (a framing phrase such as "overall ," or a neutral sentence about
the plot, the director, the runtime), then 2-4 evaluative clauses, then "." or "!", optionally followed
by a recommendation sentence. Each clause draws its polarity from the mood: "the acting is not very
good", "i really loved the soundtrack", "it is an extremely dull film", "this is the best movie i have
seen". Polarity comes from VADER-lexicon adjectives of graded strength, boosters and dampeners ("very",
"somewhat") and negation ("not great", "never boring"). Clauses of opposite polarity are joined by
", but", of equal polarity by ", and", or split into sentences, so sentiment is never one keyword.

Automaton. The grammar is written as weighted choices of phrases (a phrase may be empty), then compiled
to an epsilon-free automaton whose arcs each emit one word with a probability; a state may also stop.
Different paths emit the same words (moods share the vocabulary), so scoring runs the forward algorithm
in log space, summing over all paths.

Length. Reviews are the automaton's outputs conditioned on min_words <= length <= max_words. Sampling
rejects other lengths, which draws exactly from that conditional; scoring divides by its normaliser
Z = P(length in range), computed by dynamic programming over lengths, and a prefix's score counts only
the completions whose total length is in range.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import scipy.sparse

STOP = -1  # pseudo-destination: the review ends here

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


class _Builder:
    """Collects weighted choices `src -> (phrase, dst)`; an empty phrase moves without a word."""

    def __init__(self) -> None:
        self.choices: list[list[tuple[float, tuple[str, ...], int]]] = []

    def state(self) -> int:
        self.choices.append([])
        return len(self.choices) - 1

    def add(self, src: int, phrases: str | tuple[str, ...], dst: int, weight: float = 1.0) -> None:
        """Add each phrase with an equal share of `weight` (weights are normalised per state)."""
        phrases = (phrases,) if isinstance(phrases, str) else phrases
        if weight <= 0:
            return
        for phrase in phrases:
            self.choices[src].append((weight / len(phrases), tuple(phrase.split()), dst))

    def then(self, src: int, phrases: str | tuple[str, ...], weight: float = 1.0) -> int:
        """Add phrases from `src` into a fresh state and return that state, for chaining."""
        dst = self.state()
        self.add(src, phrases, dst, weight)
        return dst

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


def _expand_phrases(choices: list) -> tuple[list, list, list]:
    """Normalise weights per state and split phrases into one-word arcs through fresh chain states.

    Returns, per state: word arcs [(word, dst, p)], empty moves [(dst, p)], and the stop probability.
    """
    arcs, moves, stops = [], [], []

    def new_state() -> int:
        arcs.append([]), moves.append([]), stops.append(0.0)
        return len(arcs) - 1

    for _ in choices:
        new_state()
    for src, options in enumerate(choices):
        total = sum(weight for weight, _, _ in options)
        if total <= 0:
            raise ValueError(f"grammar state {src} has no way out")
        for weight, words, dst in options:
            p, state = weight / total, src
            for i, word in enumerate(words):
                last = i == len(words) - 1
                next_state = dst if last and dst != STOP else new_state()
                arcs[state].append((word, next_state, p))
                p, state = 1.0, next_state
            if dst == STOP:
                stops[state] += p
            elif not words:
                moves[src].append((dst, p))
    return arcs, moves, stops


def _compile(choices: list, start: int) -> tuple[list[dict], np.ndarray]:
    """Epsilon-free automaton of the states reachable from `start`, renumbered so start is 0.

    Returns per state a dict {(word, dst): p} and the stop probabilities, shape (S,).
    """
    arcs, moves, stops = _expand_phrases(choices)
    closed: dict[int, tuple[dict, float]] = {}

    def close(state: int, path: frozenset) -> tuple[dict, float]:
        if state in path:
            raise ValueError("the grammar has a cycle of empty moves")
        if state not in closed:
            out, stop = defaultdict(float), stops[state]
            for word, dst, p in arcs[state]:
                out[word, dst] += p
            for dst, p in moves[state]:
                inner, inner_stop = close(dst, path | {state})
                for key, q in inner.items():
                    out[key] += p * q
                stop += p * inner_stop
            closed[state] = (dict(out), stop)
        return closed[state]

    order, number = [start], {start: 0}
    for state in order:  # breadth-first; `order` grows while we walk it
        for _, dst in close(state, frozenset())[0]:
            if dst not in number:
                number[dst] = len(order)
                order.append(dst)
    renumbered = [{(w, number[d]): p for (w, d), p in closed[s][0].items()} for s in order]
    return renumbered, np.array([closed[s][1] for s in order])


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(x)


def _logsumexp(x: np.ndarray) -> float:
    top = x.max()
    return float(top) if top == -np.inf else float(top + np.log(np.exp(x - top).sum()))


class ReviewGrammar:
    """Sample short movie reviews and score texts exactly under the grammar (see module docstring)."""

    min_words = 10
    max_words = 40

    def __init__(self, mood_weights: tuple[float, ...] = MOOD_WEIGHTS) -> None:
        builder = _Builder()
        start = builder.state()
        for mood, weight in enumerate(mood_weights):
            _add_review(builder, start, mood, weight)
        arcs, stops = _compile(builder.choices, start)
        self.vocabulary: tuple[str, ...] = tuple(sorted({w for out in arcs for w, _ in out}))
        flat = [(s, w, d, p) for s, out in enumerate(arcs) for (w, d), p in out.items()]
        src, words, dst, probs = (np.array(column) for column in zip(*flat))
        self._arcs_by_word = {w: (src[words == w], dst[words == w], _log(probs[words == w]),
                                  np.unique(dst[words == w])) for w in self.vocabulary}
        self._log_stop = _log(stops)
        self._log_tail = _log(self._completion_mass(src, dst, probs, stops))
        self._log_z = self._log_tail[0, 0]  # log P(min_words <= length <= max_words)
        self._sampler = _sampling_tables(arcs, stops, {w: i for i, w in enumerate(self.vocabulary)})

    @property
    def n_states(self) -> int:
        return len(self._log_stop)

    def _completion_mass(self, src, dst, probs, stops) -> np.ndarray:
        """(max_words + 1, S): P(the review ends with a length in range | in state s after k words)."""
        step = scipy.sparse.csr_matrix((probs, (src, dst)), shape=(len(stops), len(stops)))
        exact = [stops]  # exact[m][s] = P(exactly m more words, then stop | state s)
        for _ in range(self.max_words):
            exact.append(step @ exact[-1])
        exact = np.array(exact)
        return np.array([exact[max(0, self.min_words - k): self.max_words - k + 1].sum(axis=0)
                         for k in range(self.max_words + 1)])

    def _forward(self, words: list[str]):
        """Yield, after each word, log alpha (S,) = log P(emit these words and reach state s), and
        the states where it may be finite (the word's arc targets), so sums can skip the rest."""
        log_alpha = np.full(self.n_states, -np.inf)
        log_alpha[0] = 0.0
        for word in words[: self.max_words]:
            if word not in self._arcs_by_word:
                return
            src, dst, log_p, targets = self._arcs_by_word[word]
            log_alpha_next = np.full(self.n_states, -np.inf)
            np.logaddexp.at(log_alpha_next, dst, log_alpha[src] + log_p)
            log_alpha = log_alpha_next
            yield log_alpha, targets

    def prefix_logprobs(self, text: str) -> np.ndarray:
        """log P(a review starts with the first k words), k = 1..n; -inf from the first bad word on."""
        words = text.split()
        out = np.full(len(words), -np.inf)
        for k, (log_alpha, states) in enumerate(self._forward(words), start=1):
            out[k - 1] = _logsumexp(log_alpha[states] + self._log_tail[k, states]) - self._log_z
            if out[k - 1] == -np.inf:
                break
        return out

    def prefix_logprob(self, text: str) -> float:
        """log P(a review starts with these whitespace-separated words); 0.0 for the empty prefix."""
        scores = self.prefix_logprobs(text)
        return float(scores[-1]) if len(scores) else 0.0

    def logprob(self, text: str) -> float:
        """log P(sample returns exactly this text), compared word by word; -inf if impossible."""
        words = text.split()
        if not self.min_words <= len(words) <= self.max_words:
            return -np.inf
        n_read, log_alpha, states = 0, None, None
        for n_read, (log_alpha, states) in enumerate(self._forward(words), start=1):
            pass
        if n_read < len(words):
            return -np.inf
        return _logsumexp(log_alpha[states] + self._log_stop[states]) - float(self._log_z)

    def sample(self, n: int, rng: np.random.Generator) -> list[str]:
        """n reviews drawn i.i.d.; rejecting lengths out of range draws exactly the conditional.

        Draws go in fixed-size batches, so with equal seeds sample(n) is a prefix of sample(m > n).
        """
        texts: list[str] = []
        while len(texts) < n:
            texts.extend(self._sample_batch(2048, rng))
        return texts[:n]

    def _sample_batch(self, size: int, rng: np.random.Generator) -> list[str]:
        cumulative, symbol, destination = self._sampler
        state = np.zeros(size, dtype=np.int64)
        words = np.zeros((size, self.max_words + 1), dtype=np.int64)
        length = np.full(size, -1)  # -1: still running, or rejected for running too long
        running = np.arange(size)
        for t in range(self.max_words + 1):
            current = state[running]
            choice = (rng.random(running.size)[:, None] >= cumulative[current]).sum(axis=1)
            emitted = symbol[current, choice]
            stopped = emitted == STOP
            length[running[stopped]] = t
            running, current, choice = running[~stopped], current[~stopped], choice[~stopped]
            words[running, t] = emitted[~stopped]
            state[running] = destination[current, choice]
        vocabulary = np.array(self.vocabulary)
        keep = np.flatnonzero(length >= self.min_words)
        return [" ".join(vocabulary[words[i, : length[i]]]) for i in keep]


def _sampling_tables(arcs: list[dict], stops: np.ndarray, index: dict[str, int]):
    """Padded (S, K) cumulative probabilities, emitted word ids (STOP to end) and next states."""
    width = max(len(out) for out in arcs) + 1
    cumulative = np.full((len(arcs), width), 2.0)  # 2.0 > any uniform draw: padding is never chosen
    symbol = np.full((len(arcs), width), STOP)
    destination = np.zeros((len(arcs), width), dtype=np.int64)
    for s, out in enumerate(arcs):
        options = [(index[w], d, p) for (w, d), p in out.items()] + [(STOP, 0, stops[s])]
        options = [option for option in options if option[2] > 0]
        symbol[s, : len(options)], destination[s, : len(options)], probs = zip(*options)
        cumulative[s, : len(options)] = np.cumsum(probs)
        cumulative[s, len(options) - 1] = 1.0  # guard against round-off leaving a gap below 1
    return cumulative, symbol, destination
