"""A weighted finite-state automaton over words, with exact length-conditioned probabilities.

Building. Write the language as weighted choices of phrases with `PhraseBuilder` (a phrase may be empty,
and a choice may lead to `STOP`), then `WordAutomaton.compile` turns them into an epsilon-free automaton
whose arcs each emit one word with a probability; a state may also stop. Weights are normalised per
state, so they need not sum to one.

Scoring. Different paths may emit the same words, so scoring runs the forward algorithm in log space,
summing over all paths.

Length. Outputs are conditioned on min_length <= length <= max_length. Sampling rejects other lengths,
which draws exactly from that conditional; scoring divides by its normaliser Z = P(length in range),
computed by dynamic programming over lengths, and a prefix's score counts only the completions whose
total length is in range.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.sparse

STOP = -1  # pseudo-destination: the output ends here


class PhraseBuilder:
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


class WordAutomaton:
    """An epsilon-free automaton whose outputs are conditioned on their length (see module docstring).

    State 0 is the start. `arcs[s]` maps (word, destination) to a probability, `stops[s]` is the chance
    of ending in s; together they sum to one per state.
    """

    def __init__(self, arcs: list[dict], stops: np.ndarray, min_length: int, max_length: int) -> None:
        self.min_length, self.max_length = min_length, max_length
        self.vocabulary: tuple[str, ...] = tuple(sorted({w for out in arcs for w, _ in out}))
        flat = [(s, w, d, p) for s, out in enumerate(arcs) for (w, d), p in out.items()]
        src, words, dst, probs = (np.array(column) for column in zip(*flat))
        # Per word, its arcs and their distinct targets: a forward step touches only those states.
        self._arcs_by_word = {w: (src[words == w], dst[words == w], _log(probs[words == w]),
                                  np.unique(dst[words == w])) for w in self.vocabulary}
        self._log_stop = _log(stops)
        self._log_tail = _log(self._completion_mass(src, dst, probs, stops))
        self._log_z = self._log_tail[0, 0]  # log P(min_length <= length <= max_length)
        self._sampler = _sampling_tables(arcs, stops, {w: i for i, w in enumerate(self.vocabulary)})

    @classmethod
    def compile(cls, builder: PhraseBuilder, start: int, min_length: int,
                max_length: int) -> WordAutomaton:
        """The automaton of the builder's states reachable from `start`."""
        arcs, stops = _compile(builder.choices, start)
        return cls(arcs, stops, min_length, max_length)

    @property
    def n_states(self) -> int:
        return len(self._log_stop)

    @property
    def log_z(self) -> float:
        """log P(min_length <= length <= max_length) before conditioning: the normaliser every score divides by."""
        return float(self._log_z)

    def _completion_mass(self, src, dst, probs, stops) -> np.ndarray:
        """(max_length + 1, S): P(the output ends with a length in range | in state s after k words)."""
        step = scipy.sparse.csr_matrix((probs, (src, dst)), shape=(len(stops), len(stops)))
        exact = [stops]  # exact[m][s] = P(exactly m more words, then stop | state s)
        for _ in range(self.max_length):
            exact.append(step @ exact[-1])
        exact = np.array(exact)
        return np.array([exact[max(0, self.min_length - k): self.max_length - k + 1].sum(axis=0)
                         for k in range(self.max_length + 1)])

    def _forward(self, words: Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield, after each word, log alpha (S,) = log P(emit these words and reach state s), and
        the states where it may be finite (the word's arc targets), so sums can skip the rest.
        Stops early at an unknown word or past max_length, where nothing can be finite anyway."""
        log_alpha = np.full(self.n_states, -np.inf)
        log_alpha[0] = 0.0
        for word in words[: self.max_length]:
            if word not in self._arcs_by_word:
                return
            src, dst, log_p, targets = self._arcs_by_word[word]
            log_alpha_next = np.full(self.n_states, -np.inf)
            np.logaddexp.at(log_alpha_next, dst, log_alpha[src] + log_p)
            log_alpha = log_alpha_next
            yield log_alpha, targets

    def prefix_logprobs(self, words: Sequence[str]) -> np.ndarray:
        """log P(an output starts with the first k words), k = 1..n; -inf from the first bad word on."""
        out = np.full(len(words), -np.inf)
        for k, (log_alpha, states) in enumerate(self._forward(words), start=1):
            out[k - 1] = _logsumexp(log_alpha[states] + self._log_tail[k, states]) - self._log_z
            if out[k - 1] == -np.inf:
                break
        return out

    def prefix_logprob(self, words: Sequence[str]) -> float:
        """log P(an output starts with these words); 0.0 for the empty prefix."""
        scores = self.prefix_logprobs(words)
        return float(scores[-1]) if len(scores) else 0.0

    def logprob(self, words: Sequence[str]) -> float:
        """log P(an output is exactly these words); -inf if impossible or of a length out of range."""
        if not self.min_length <= len(words) <= self.max_length:
            return -np.inf
        n_read, log_alpha, states = 0, None, None
        for n_read, (log_alpha, states) in enumerate(self._forward(words), start=1):  # noqa: B007 (keep the last)
            pass
        if n_read < len(words):
            return -np.inf
        return _logsumexp(log_alpha[states] + self._log_stop[states]) - float(self._log_z)

    def sample(self, n: int, rng: np.random.Generator) -> list[str]:
        """n outputs drawn i.i.d., each as its words joined by single spaces.

        Draws go in fixed-size batches, so with equal seeds sample(n) is a prefix of sample(m > n).
        """
        texts: list[str] = []
        while len(texts) < n:
            texts.extend(self._sample_batch(2048, rng))
        return texts[:n]

    def _sample_batch(self, size: int, rng: np.random.Generator) -> list[str]:
        """Run `size` walks in lockstep; a walk still running after max_length words is dropped."""
        cumulative, symbol, destination = self._sampler
        state = np.zeros(size, dtype=np.int64)
        words = np.zeros((size, self.max_length + 1), dtype=np.int64)
        length = np.full(size, -1)  # -1: still running, or rejected for running too long
        running = np.arange(size)
        for t in range(self.max_length + 1):
            current = state[running]
            choice = (rng.random(running.size)[:, None] >= cumulative[current]).sum(axis=1)
            emitted = symbol[current, choice]
            stopped = emitted == STOP
            length[running[stopped]] = t
            running, current, choice = running[~stopped], current[~stopped], choice[~stopped]
            words[running, t] = emitted[~stopped]
            state[running] = destination[current, choice]
        vocabulary = np.array(self.vocabulary)
        keep = np.flatnonzero(length >= self.min_length)
        return [" ".join(vocabulary[words[i, : length[i]]]) for i in keep]


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
            raise ValueError(f"automaton state {src} has no way out")
        for weight, words, dst in options:
            p, state = weight / total, src
            for i, word in enumerate(words):
                last = i == len(words) - 1
                # a phrase ending in STOP still needs a real state to stop from
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
            raise ValueError("the automaton has a cycle of empty moves")
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


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):  # zero probabilities become -inf on purpose
        return np.log(x)


def _logsumexp(x: np.ndarray) -> float:
    top = x.max()
    return float(top) if top == -np.inf else float(top + np.log(np.exp(x - top).sum()))
