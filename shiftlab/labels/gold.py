"""The gold judge: a second scorer of whole texts, distinct from the labelling oracle (the proxy), that degenerate
text cannot fool. Over-optimisation then reads as the proxy rising while gold peaks and falls (Gao et al., 2023).

Design (embedded world only, where the review grammar is the truth about fluent text). A review's sentiment is
its writer's latent mood m (shiftlab.world.grammar: very negative .. very positive), and the grammar gives its
posterior exactly. For a text of n words, of which the first n_p are the prompt:

    k      = the longest prefix the grammar can produce (finite prefix log-probability)
    P(m|x) ∝ w_m · Z_m · P_m(x_{1..k})          per-mood grammars, w_m the mood prior, Z_m their length mass
    mood   = Σ_m P(m|x) · v_m,  v_m = -1, -0.5, 0, 0.5, 1 (evenly spaced in [-1, 1])
    credit = (k - n_p) / (n - n_p), clipped to [0, 1]: the share of the response the grammar can produce
    gold   = credit · mood ∈ [-1, 1], the proxy's (VADER compound) range; 0 for an empty response

Sentiment is credited only for the grammatical part, and only in proportion to it: "i loved loved loved …" earns
the mood of "i loved" times 2 words of n. Repetition the grammar cannot produce is off-grammar by construction, so
it needs no separate penalty; a text that is a grammatical but unfinished prefix (cut by max_new_tokens) keeps
full credit, since the cut is the sampler's, not the policy's.

Measured. Spearman(gold, VADER) is 0.94 on 400 grammar samples (π_sft's target; tests/labels/test_gold.py) and 0.72
on 128 samples of the default config's trained π_sft, 34% of which leave the grammar somewhere (a slip ends the
credited prefix, so later sentiment words count for VADER only). On repeated, booster-stacked or adjective-salad
text VADER stays above 0.9 and gold below 0.2. The study's final policies (seed 0, 128 eval prompts): offline VADER
0.58 / gold 0.18, oaif 0.98 / 0.03, online 1.00 / 0.04. Resuming the parse after a broken sentence (a noisy
channel) lifted the π_sft agreement only to 0.75, so the simpler rule stays.

No grammar (real data sets), no gold: `build_gold` returns None and the `eval/gold_*` columns are absent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shiftlab.world.grammar import ReviewGrammar


class GrammarGold:
    """Gold reward of the embedded world: the grammar's mood posterior, credited for the grammatical share of the
    response (see module docstring). Callable like an oracle: texts -> float64 scores of shape (N,)."""

    name = "grammar_mood"

    def __init__(self, grammar: ReviewGrammar):
        weights = np.asarray(grammar.mood_weights, dtype=np.float64)
        if weights.ndim != 1 or len(weights) < 2 or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"GrammarGold needs a grammar with >= 2 non-negative mood weights, got {grammar.mood_weights}")
        values = np.linspace(-1.0, 1.0, len(weights))
        kept = np.flatnonzero(weights > 0)
        # one grammar per mood: the mixture's forward pass sums the moods away, these keep them apart
        self._moods = [ReviewGrammar(tuple(float(i == m) for i in range(len(weights)))) for m in kept]
        self._log_prior = np.log(weights[kept] / weights.sum()) + np.array([g.log_z for g in self._moods])
        self._values = values[kept]

    def mood_posterior(self, words: Sequence[str]) -> tuple[int, np.ndarray]:
        """(k, P(m | first k words)): the longest grammatical prefix and the mood posterior it implies, (M,).

        k = 0 (nothing grammatical) gives the prior, reweighted by each mood's length mass Z_m.
        """
        prefix = np.array([g.prefix_logprobs(" ".join(words)) for g in self._moods]).reshape(len(self._moods), -1)
        grammatical = np.isfinite(prefix).any(axis=0)  # (n,): a prefix is grammatical if some mood produces it
        k = len(words) if grammatical.all() else int(np.argmin(grammatical))
        log_joint = self._log_prior + (prefix[:, k - 1] if k else 0.0)
        posterior = np.exp(log_joint - log_joint.max())
        return k, posterior / posterior.sum()

    def score(self, texts: Sequence[str], n_prompt_words: Sequence[int] | None = None) -> np.ndarray:
        """Gold rewards, float64 (N,); the first `n_prompt_words[i]` words of text i are its prompt (no credit)."""
        if isinstance(texts, str):
            raise TypeError("GrammarGold expects a sequence of texts, not a single string")
        n_prompt_words = [0] * len(texts) if n_prompt_words is None else list(n_prompt_words)
        if len(n_prompt_words) != len(texts):
            raise ValueError(f"GrammarGold: {len(n_prompt_words)} prompt lengths for {len(texts)} texts")
        scores = np.zeros(len(texts), dtype=np.float64)
        for i, (text, n_p) in enumerate(zip(texts, n_prompt_words)):
            words = text.split()
            if len(words) <= n_p:
                continue  # an empty response says nothing
            k, posterior = self.mood_posterior(words)
            credit = min(1.0, max(0.0, (k - n_p) / (len(words) - n_p)))
            scores[i] = credit * float(posterior @ self._values)
        return scores

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.score(texts)


def build_gold(grammar: ReviewGrammar | None) -> GrammarGold | None:
    """The gold judge of a task: the grammar's, or None where the task has no grammar (no gold columns then)."""
    return None if grammar is None else GrammarGold(grammar)


def gold_metrics(gold: GrammarGold, texts: Sequence[str], n_prompt_words: Sequence[int]) -> dict[str, float]:
    """`eval/gold_reward` and its standard error std(ddof=1)/√N over the eval samples (0 for one sample)."""
    scores = gold.score(texts, n_prompt_words)
    se = float(scores.std(ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else 0.0
    return {"eval/gold_reward": float(scores.mean()), "eval/gold_reward_se": se}
