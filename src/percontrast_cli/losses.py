"""CE and PerCE: one weighted token-level cross-entropy core.

PerCE weights each target token by a non-negative function of its PerContrast score
``s_t = log p(y_t | x, P, y_<t) - log p(y_t | x, P', y_<t)`` (the log of the Personal Influence Ratio, PIR).
Weights are detached and the loss is divided by the number of target tokens in the whole optimisation step
(all gradient-accumulation micro-batches, all ranks), so uniform weights, and ``alpha = 0``, give exactly CE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from percontrast_cli.data.encode import IGNORE
from percontrast_cli.errors import PercontrastError

WEIGHTINGS = ("none", "pir", "linear")


def is_weighted(loss_cfg) -> bool:
    """Whether a loss config differs from plain CE (weighting none, or alpha 0, is exactly CE)."""
    return loss_cfg.weighting != "none" and loss_cfg.alpha != 0


def token_weights(scores: torch.Tensor, weighting: str, alpha: float, max_weight: float) -> torch.Tensor:
    """Map PerContrast scores to loss weights (detached).

    - ``none``: all ones (plain CE).
    - ``pir``: ``clamp(PIR, 1, max_weight) ** alpha`` with ``PIR = exp(s)``: tokens whose probability the
      profile raises are upweighted by their influence ratio, capped; others keep weight 1.
    - ``linear``: ``1 + alpha * clamp(s, 0, log(max_weight))``: the same cap, additive in the log ratio.
    """
    scores = scores.detach().float()
    if weighting == "none" or alpha == 0:
        return torch.ones_like(scores)
    if weighting == "pir":
        return scores.exp().clamp(1.0, max_weight).pow(alpha)
    if weighting == "linear":
        return 1.0 + alpha * scores.clamp(0.0, float(torch.tensor(max_weight).log()))
    raise PercontrastError(f"loss.weighting={weighting!r} is not one of {', '.join(WEIGHTINGS)}")


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position next-token NLL aligned with ``labels`` (0 where the label is ignored)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(shift_labels.shape)
    return F.pad(nll, (1, 0))


def weighted_causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """``sum_t w_t * nll_t / num_items``.

    ``num_items`` is the count of target tokens in the whole optimisation step; when a step spans several
    micro-batches, summing this loss over them gives the mean over all the step's tokens (not a mean of
    per-micro-batch means, which overweights short micro-batches). Defaults to this batch's count.
    """
    return weighted_nll(token_nll(logits, labels), labels, weights, num_items)


def weighted_nll(
    nll: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """The reduction of weighted_causal_lm_loss, for callers that also need the per-token NLL."""
    if weights is not None:
        nll = nll * weights.detach().to(nll.dtype)
    if num_items is None:
        num_items = (labels[:, 1:] != IGNORE).sum()
    return nll.sum() / num_items
