"""The state shift measured without μ's probabilities: two-sample measures (shiftlab.functional.two_sample) between
states (prompt + partial response) featurised by the frozen π_sft, each logged beside its null.

Two comparisons tell selection from shift. Training-pair states against π_θ's (`eval/c2st_acc`, `eval/mmd2`,
`eval/js_ngram`) mix both: the training rows are the best and worst of k samples of μ, so they differ from μ's
samples even at step 0 of an offline run, where π_θ = μ. μ's own unselected samples on the eval prompts against
π_θ's (the `_mu` columns, only when μ is known) are shift alone: at that step 0 their excess over the null is ≈ 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from shiftlab.data.batches import SequenceBatch, completions_to_batch
from shiftlab.functional import two_sample
from shiftlab.models.sampler import SamplerSettings, sample_completions
from shiftlab.training.sources import Probe

MIN_TWO_SAMPLE_POINTS = 8  # per sample: fewer leave no held-out half worth scoring
# Offsets from the evaluation seed: π_θ's samples draw with `seed`, the data and π_θ state features with `seed + 1`.
MU_SAMPLE_SEED, MU_FEATURE_SEED = 2, 3
JS_ORDERS, JS_ALPHA = 3, 0.01
JS_PERMUTATIONS = 50  # at most: only the null's mean is logged, and its Monte-Carlo error is already ~1e-3 bits


def prefix_features(hidden: torch.Tensor, loss_mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One state per row: a uniformly drawn response depth t, featurised as the mean hidden state of s_t = (x, y_<t).

    hidden (B, T, D) from the frozen π_sft; loss_mask (B, T) marks response label positions. Returns (B, D).
    """
    cum = hidden.cumsum(1)  # (B, T, D): cum[:, j] = Σ_{i≤j} h_i
    rows = []
    for b in range(hidden.shape[0]):
        positions = torch.nonzero(loss_mask[b], as_tuple=False).flatten()
        t = int(positions[torch.randint(len(positions), (1,), generator=generator)])  # predicts token t from s_t
        rows.append(cum[b, t - 1] / t)
    return torch.stack(rows)


def one_row_per_prompt(batch: SequenceBatch, generator: torch.Generator) -> torch.Tensor:
    """(G,) row indices, one drawn at random among the rows of each distinct prompt, in first-seen order.

    Rows that share a prompt (a pair's chosen and rejected, the k rollouts of a prompt) are alike through it: kept
    together, a classifier that saw one in training recognises the other when scored, and the permutation nulls
    miss their likeness. One row per prompt is an i.i.d. sample of the states the objective evaluates (for
    preference pairs d_D = ½(d_chosen + d_rejected))."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ids, mask) in enumerate(zip(batch.input_ids, batch.loss_mask)):
        start = int(mask.nonzero()[0]) if mask.any() else len(ids)  # right-padded: the prompt fills [0, start)
        groups.setdefault(tuple(ids[:start].tolist()), []).append(i)
    return torch.tensor([rows[int(torch.randint(len(rows), (1,), generator=generator))] for rows in groups.values()])


def responses(batch: SequenceBatch) -> list[list[int]]:
    return [row[mask].tolist() for row, mask in zip(batch.input_ids, batch.loss_mask)]


def js_columns(seqs_x: Sequence[Sequence[int]], seqs_y: Sequence[Sequence[int]], *, suffix: str, paired: bool,
               seed: int, n_permutations: int) -> dict[str, float]:
    js = two_sample.ngram_js_permutation_test(seqs_x, seqs_y, n_max=JS_ORDERS, alpha=JS_ALPHA,
                                              n_permutations=min(n_permutations, JS_PERMUTATIONS), seed=seed, paired=paired)
    return {f"eval/js_ngram{suffix}": js["js"], f"eval/js_ngram{suffix}_null": js["null"],
            f"eval/js_ngram{suffix}_excess": js["js"] - js["null"]}


def feature_columns(x: torch.Tensor, y: torch.Tensor, *, suffix: str, paired: bool, seed: int,
                    n_permutations: int) -> dict[str, float]:
    """C2ST and MMD² of state features x (N, D) against y (M, D), each with its null and excess."""
    c2st = two_sample.classifier_two_sample_test(x, y, seed=seed, paired=paired)
    mmd = two_sample.mmd_permutation_test(x, y, n_permutations=n_permutations, seed=seed, paired=paired)
    acc, mmd2 = f"eval/c2st_acc{suffix}", f"eval/mmd2{suffix}"
    return {
        acc: c2st["accuracy"], f"{acc}_low": c2st["ci_low"], f"{acc}_high": c2st["ci_high"],
        f"{acc}_null": c2st["null"], f"{acc}_excess": c2st["accuracy"] - c2st["null"],
        f"eval/c2st_tv_lb{suffix}": c2st["tv_lower_bound"],
        mmd2: mmd["mmd2"], f"{mmd2}_null": mmd["null"], f"{mmd2}_excess": mmd["mmd2"] - mmd["null"],
        f"eval/mmd_pvalue{suffix}": mmd["p_value"],
    }


class StateShift:
    """Both comparisons for one evaluation. μ's samples on the eval prompts are drawn with their own generator;
    when μ is the frozen π_sft (the built offline set) they are the same at every evaluation and drawn once."""

    def __init__(self, prompt_ids: Sequence[Sequence[int]], sampler: SamplerSettings, *, sft: torch.nn.Module,
                 seed: int, n_permutations: int):
        self.prompt_ids, self.sampler, self.sft = prompt_ids, sampler, sft
        self.seed, self.n_permutations = seed, n_permutations
        self._frozen_mu: tuple[torch.Tensor, list[list[int]]] | None = None
        self._mu_batch: SequenceBatch | None = None

    def __call__(self, sft_hidden: Callable[[SequenceBatch], torch.Tensor], probe: Probe, data: SequenceBatch,
                 batch: SequenceBatch) -> dict[str, float]:
        """`sft_hidden`: (B, T, D) last hidden states of π_sft on a batch (cached per batch object); `data`: the
        probe's rows as one SequenceBatch; `batch`: π_θ's samples of the eval prompts."""
        generator = torch.Generator().manual_seed(self.seed + 1)
        rows = one_row_per_prompt(data, generator)
        common = {"seed": self.seed, "n_permutations": self.n_permutations}
        seqs_all = responses(data)
        seqs_data = [seqs_all[i] for i in rows.tolist()]
        out = js_columns(seqs_data, responses(batch), suffix="", paired=False, **common)
        enough = min(len(rows), len(batch.input_ids)) >= MIN_TWO_SAMPLE_POINTS
        if enough:  # otherwise the feature columns stay empty rather than noisy
            x = prefix_features(sft_hidden(data)[rows], data.loss_mask[rows], generator)
            y = prefix_features(sft_hidden(batch), batch.loss_mask, generator)
            out |= feature_columns(x, y, suffix="", paired=False, **common)
        if probe.behaviour is not None:
            x_mu, seqs_mu = self._mu_states(probe.behaviour, sft_hidden)
            # row i of μ's samples and of π_θ's answer the same eval prompt: paired
            out |= js_columns(seqs_mu, responses(batch), suffix="_mu", paired=True, **common)
            if len(batch.input_ids) >= MIN_TWO_SAMPLE_POINTS:
                y = y if enough else prefix_features(sft_hidden(batch), batch.loss_mask, generator)
                out |= feature_columns(x_mu, y, suffix="_mu", paired=True, **common)
        return out

    def _mu_states(self, behaviour: torch.nn.Module, sft_hidden) -> tuple[torch.Tensor, list[list[int]]]:
        if behaviour is self.sft and self._frozen_mu is not None:
            return self._frozen_mu
        completions = sample_completions(behaviour, self.prompt_ids, self.sampler, k=1,
                                         generator=torch.Generator().manual_seed(self.seed + MU_SAMPLE_SEED))
        mu = completions_to_batch(completions, self.sampler.eos_token_id, self.sampler.pad_token_id)
        self._mu_batch = mu  # alive while the evaluation's forward cache, keyed by id(batch), may hold its entry
        states = prefix_features(sft_hidden(mu), mu.loss_mask, torch.Generator().manual_seed(self.seed + MU_FEATURE_SEED))
        if behaviour is self.sft:  # an on-policy μ is a snapshot updated in place: never cached
            self._frozen_mu = (states, responses(mu))
        return states, responses(mu)
