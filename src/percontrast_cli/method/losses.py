"""CE, PerCE and the paper's token-weighting baselines: one weighted token-level cross-entropy core.

Every loss is ``sum_t w_t * nll_t / N`` with detached weights ``w_t`` and ``N`` the number of target tokens
in the whole optimisation step (all gradient-accumulation micro-batches, all ranks), so uniform weights, and
``alpha = 0`` for every weighting, give exactly CE. The weightings differ only in the signal they read:

- PerCE (arXiv 2603.06595) reads the PerContrast score ``s_t = log p(y_t | x, P, y_<t) - log p(y_t | x, P',
  y_<t)``, which is already the log of the paper's Personal Influence Ratio (PIR);
- LossCE (Rho-1 style) reads the excess loss of the current model over a reference model;
- EntCE reads the model's predictive entropy; DFT reads the model's probability of the target token;
- NextQuill (juntaoyou/NextQuill, train.py) reads both passes' next-token distributions (``js``: their
  Jensen-Shannon divergence; ``target``: a threshold on p_with(y_t) - p_without(y_t)) and adds a causal term
  ``causal_alpha * CE(logits_with - logits_without, y)`` whose gradient flows through both passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from percontrast_cli.data.encode import IGNORE
from percontrast_cli.runtime.errors import PercontrastError

# Label value of positions without a loss (prompt, padding): F.cross_entropy's default ignore_index, the value
# data.encode masks prompts with (tests/test_layers.py checks they agree).

# weighting -> the signal it needs: "pir" (PerContrast scores), "reference" (a reference model's NLL),
# "logits" (the training forward pass itself), "contrast" (both passes' full distributions, online only), or
# None (plain CE).
WEIGHTINGS = {
    "none": None,
    "clip_pir": "pir",
    "exp_pir": "pir",
    "linear_pir": "pir",
    "excess_loss": "reference",
    "entropy": "logits",
    "target_prob": "logits",
    "js": "contrast",
    "target": "contrast",
}
# tokens: divide by the step's target-token count (PerCE, MIRROR) | weights: by the sum of weights (NextQuill,
# LLaMA-Factory's loss_weight) | abs_weights: by the sum of absolute weights (signed weights, a TRL proposal)
NORMALIZATIONS = ("tokens", "weights", "abs_weights")

# Plain CE in the uniform loss schema: what every CE-equivalent setting trains.
CE = OmegaConf.create(
    {
        "name": "ce",
        "weighting": "none",
        "alpha": 0.0,
        "clip_min": 1.0,
        "clip_max": 1.0,
        "keep_ratio": 1.0,
        "threshold": 0.0,
        "causal_alpha": 0.0,
        "normalize": "tokens",
    }
)


def causal_alpha(loss_cfg) -> float:
    """The weight of NextQuill's causal term (0: none)."""
    return float(loss_cfg.causal_alpha)


def is_weighted(loss_cfg) -> bool:
    """Whether a loss config differs from plain CE (weighting none, or alpha 0, is exactly CE, unless a causal
    term is added)."""
    return (loss_cfg.weighting != "none" and loss_cfg.alpha != 0) or causal_alpha(loss_cfg) != 0


def weight_signal(loss_cfg) -> str | None:
    """What the loss's weights are computed from (None for CE-equivalent settings)."""
    return WEIGHTINGS[loss_cfg.weighting] if is_weighted(loss_cfg) else None


def weight_source(loss_cfg, refresh: str) -> str | None:
    """Where a training run's token weights come from, decided here once for every stage: None (plain CE),
    "online" (PerContrast re-estimated inside every step; NextQuill's weightings always), "rounds"
    (PerContrast `estimate` artifacts, re-estimated every steps/rounds steps), "reference" (a `reference`
    artifact's NLL, LossCE) or "logits" (the training forward pass itself)."""
    signal = weight_signal(loss_cfg)
    if signal == "contrast":
        return "online"  # full distributions of both passes: nothing an estimate artifact stores
    return refresh if signal == "pir" else signal


# Weightings whose weights depend on the other tokens of the micro-batch: LossCE keeps the top share of the
# micro-batch's tokens, EntCE divides by the micro-batch's mean entropy.
MICRO_BATCH_WEIGHTINGS = ("excess_loss", "entropy")


def reads_micro_batch_statistics(loss_cfg) -> bool:
    """Whether the loss of a token depends on which micro-batch it is in (so the split of the global batch
    over micro-batches and processes can change the weights): the weightings above, and ``normalize:
    weights`` / ``abs_weights``, which rescale each micro-batch by its own sum of weights."""
    if not is_weighted(loss_cfg):
        return False
    return loss_cfg.weighting in MICRO_BATCH_WEIGHTINGS or loss_cfg.normalize != "tokens"


# weighting -> (the rule of its weights' lowest value, the signal's lowest value after clipping): every
# weighting is 1 + alpha * (signal - 1) over a signal bounded below; exp_pir and linear_pir never go below 1.
LOWEST_SIGNAL = {
    "clip_pir": ("1 + alpha * (clip_min - 1)", lambda cfg: float(cfg.clip_min)),
    "entropy": ("1 + alpha * (clip_min - 1)", lambda cfg: float(cfg.clip_min)),
    "excess_loss": ("1 + alpha * (0 - 1) (an unkept token)", lambda cfg: 0.0),
    "target_prob": ("1 + alpha * (0 - 1) (a token of probability ~0)", lambda cfg: 0.0),
    "js": ("1 + alpha * (0 - 1) (two passes that agree: JS 0)", lambda cfg: 0.0),
    "target": ("1 + alpha * (min(clip_min, clip_max) - 1)", lambda cfg: min(cfg.clip_min, cfg.clip_max)),
}


def negative_weights(loss_cfg) -> str | None:
    """Why this loss can give a token a negative weight (a loss that pushes the token's probability down,
    never what a weighting means), or None: the lowest weight ``1 + alpha * (lowest signal - 1)`` must not be
    below 0."""
    if not is_weighted(loss_cfg) or loss_cfg.weighting not in LOWEST_SIGNAL:
        return None
    rule, lowest_signal = LOWEST_SIGNAL[loss_cfg.weighting]
    lowest = 1.0 + float(loss_cfg.alpha) * (lowest_signal(loss_cfg) - 1.0)
    if lowest >= 0:
        return None
    return (
        f"loss.alpha={loss_cfg.alpha} with loss.weighting={loss_cfg.weighting} gives negative token weights: "
        f"the lowest weight is {rule} = {lowest:.3g} < 0; lower loss.alpha to at most "
        f"{1.0 / (1.0 - lowest_signal(loss_cfg)):.3g}"
    )


def reads_artifact(source: str | None) -> str | None:
    """The artifact kind a weight source reads before training starts (None: nothing to compute first)."""
    return {"rounds": "estimate", "reference": "reference"}.get(source)


@dataclass
class TokenWeights:
    """Per-position weights (shaped like the labels) and where the clipped signal sat at each bound."""

    values: torch.Tensor
    at_min: torch.Tensor | None = None
    at_max: torch.Tensor | None = None


def _interpolate(raw: torch.Tensor, alpha: float) -> torch.Tensor:
    """``1 + alpha * (raw - 1)``: alpha 0 is CE (all ones), alpha 1 the weighting itself."""
    return 1.0 + alpha * (raw - 1.0)


def _clipped(raw: torch.Tensor, loss_cfg) -> TokenWeights:
    low, high = float(loss_cfg.clip_min), float(loss_cfg.clip_max)
    return TokenWeights(_interpolate(raw.clamp(low, high), loss_cfg.alpha), raw <= low, raw >= high)


def keep_top_excess(excess: torch.Tensor, mask: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """1.0 on the ``ceil(keep_ratio * n)`` target tokens with the largest excess loss, 0.0 elsewhere."""
    n = int(mask.sum())
    keep = math.ceil(keep_ratio * n)
    selected = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    if keep:
        flat = excess.float().masked_fill(~mask, float("-inf")).flatten()
        selected.view(-1)[flat.topk(keep).indices] = 1.0
    return selected


def js_weight(logits: torch.Tensor, cf_logits: torch.Tensor) -> torch.Tensor:
    """NextQuill's ``JS`` weight at every position, aligned with the labels like token_nll, detached:
    ``sum_v p log(p/m) + q log(q/m)`` with ``m = (p + q) / 2``, ``p`` / ``q`` the next-token distributions
    with / without the profile. That is twice the Jensen-Shannon divergence, as NextQuill's train.py computes
    it (lines 112-119: KLDivLoss(log m, p) + KLDivLoss(log m, q) summed over the vocabulary)."""
    logp = F.log_softmax(logits.detach()[:, :-1].float(), dim=-1)
    logq = F.log_softmax(cf_logits.detach()[:, :-1].float(), dim=-1)
    logm = torch.logaddexp(logp, logq) - math.log(2.0)
    divergence = (logp.exp() * (logp - logm) + logq.exp() * (logq - logm)).sum(-1)
    return F.pad(divergence, (1, 0))


def causal_nll(logits: torch.Tensor, cf_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NextQuill's causal term per position: the NLL of the target under ``softmax(logits_with -
    logits_without)`` (train.py line 234: CrossEntropyLoss on shift_logits - shift_logits1), in fp32, with the
    gradient flowing through both passes."""
    return token_nll(logits.float() - cf_logits.float(), labels)


def token_weights(
    loss_cfg,
    mask: torch.Tensor,
    *,
    pir: torch.Tensor | None = None,
    nll: torch.Tensor | None = None,
    ref_nll: torch.Tensor | None = None,
    logits: torch.Tensor | None = None,
    cf_logits: torch.Tensor | None = None,
    cf_nll: torch.Tensor | None = None,
) -> TokenWeights:
    """Detached loss weights for the target positions ``mask`` (all tensors aligned with the labels).

    - ``clip_pir`` (PerCE, the paper): ``1 + alpha * (clip(s, clip_min, clip_max) - 1)``; at ``alpha = 1``
      this is the paper's ``w = clip(PIR, 0.8, 5.0)`` with ``PIR = s`` (already a log ratio).
    - ``exp_pir``: ``clip(exp(s), 1, clip_max) ** alpha``: the influence ratio itself, never below 1.
    - ``linear_pir``: ``1 + alpha * clip(s, 0, log(clip_max))``: additive in the log ratio, never below 1.
    - ``excess_loss`` (LossCE, Rho-1): ``1 + alpha * (keep - 1)`` where ``keep`` is 1 on the ``keep_ratio``
      share of the micro-batch's target tokens whose NLL exceeds the reference model's the most, else 0.
    - ``entropy`` (EntCE): ``1 + alpha * (clip(H_t / mean(H), clip_min, clip_max) - 1)``, ``H_t`` the
      predictive entropy at the position, relative to its mean over the micro-batch's target tokens.
    - ``target_prob`` (DFT, TRL's ``dft`` loss): ``1 + alpha * (p(y_t) - 1)``.
    - ``js`` (NextQuill): ``1 + alpha * (JS_t - 1)``, ``JS_t`` from js_weight (factual ``logits`` and
      counterfactual ``cf_logits``).
    - ``target`` (NextQuill): ``1 + alpha * (v_t - 1)`` with ``v_t = clip_max`` where ``p(y_t | x, P) -
      p(y_t | x, P') > threshold`` and ``clip_min`` elsewhere (NextQuill: 0.9, 0.1, threshold 0.05), from the
      factual ``nll`` and the counterfactual ``cf_nll``.
    """
    weighting, alpha = loss_cfg.weighting, float(loss_cfg.alpha)
    if not is_weighted(loss_cfg):
        return TokenWeights(torch.ones(mask.shape, device=mask.device))
    if weighting == "clip_pir":
        return _clipped(pir.detach().float(), loss_cfg)
    if weighting == "exp_pir":
        ratio = pir.detach().float().exp()
        high = float(loss_cfg.clip_max)
        return TokenWeights(ratio.clamp(1.0, high).pow(alpha), ratio <= 1.0, ratio >= high)
    if weighting == "linear_pir":
        s, high = pir.detach().float(), math.log(float(loss_cfg.clip_max))
        return TokenWeights(1.0 + alpha * s.clamp(0.0, high), s <= 0.0, s >= high)
    if weighting == "excess_loss":
        excess = nll.detach().float() - ref_nll.detach().float()
        keep = keep_top_excess(excess, mask, float(loss_cfg.keep_ratio))
        return TokenWeights(_interpolate(keep, alpha), keep == 0, None)
    if weighting == "entropy":
        logp = F.log_softmax(logits.detach()[:, :-1].float(), dim=-1)
        entropy = F.pad(-(logp.exp() * logp).sum(-1), (1, 0))  # aligned with the labels, like token_nll
        mean = ((entropy * mask).sum() / mask.sum().clamp_min(1)).clamp_min(1e-12)
        return _clipped(entropy / mean, loss_cfg)
    if weighting == "target_prob":
        return TokenWeights(_interpolate((-nll.detach().float()).exp(), alpha))
    if weighting == "js":
        return TokenWeights(_interpolate(js_weight(logits, cf_logits), alpha))
    if weighting == "target":
        gain = (-nll.detach().float()).exp() - (-cf_nll.detach().float()).exp()
        chosen = gain > float(loss_cfg.threshold)
        levels = torch.where(chosen, float(loss_cfg.clip_max), float(loss_cfg.clip_min))
        return TokenWeights(_interpolate(levels, alpha), ~chosen, chosen)
    raise PercontrastError(f"loss.weighting={weighting!r} is not one of {', '.join(WEIGHTINGS)}")


def normalized(weights: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """``tokens``: the weights as they are (the loss divides by the token count: the paper's mean).
    ``weights``: rescaled so they average 1 over the micro-batch's target tokens, i.e. divided by the sum of
    weights instead of the token count, which keeps CE's step size. Exactly ``sum w*nll / sum w`` when an
    optimisation step is one micro-batch; under accumulation each micro-batch is rescaled on its own (the
    sum over the whole window is not known until its last micro-batch has run).
    ``abs_weights``: the same with the sum of absolute weights (equal to ``weights`` for weights >= 0, which
    every weighting here gives; defined for signed weights, where a sum of weights can cancel to ~0)."""
    if how == "tokens":
        return weights
    total = ((weights.abs() if how == "abs_weights" else weights) * mask).sum().clamp_min(1e-12)
    return weights * (mask.sum() / total)


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


def weighted_nll(
    nll: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """``sum_t w_t * nll_t / num_items`` over the per-token NLL (``token_nll``).

    ``num_items`` is the count of target tokens in the whole optimisation step; when a step spans several
    micro-batches, summing this loss over them gives the mean over all the step's tokens (not a mean of
    per-micro-batch means, which overweights short micro-batches). Defaults to this batch's count.
    """
    if weights is not None:
        nll = nll * weights.detach().to(nll.dtype)
    if num_items is None:
        num_items = (labels[:, 1:] != IGNORE).sum()
    return nll.sum() / num_items
