"""PerContrast: per-token log-probability differences between the factual and counterfactual contexts.

Values are label-aligned on the batch's tail (modeling.forward): ``(batch, keep)``, 0 away from targets.
"""

from __future__ import annotations

import torch

from percontrast_cli.method.losses import token_nll
from percontrast_cli.modeling.forward import tail, target_logits, unwrapped


@torch.no_grad()
def target_nll(model, batch: dict, prefix: str = "") -> torch.Tensor:
    """Teacher-forced NLL (fp32) of every target token of the (``prefix``: counterfactual) sequences."""
    logits = target_logits(model, batch, prefix)
    return token_nll(logits, tail(batch[f"{prefix}labels"], batch["keep"]))


def has_active_dropout(model) -> bool:
    """Whether a forward pass of ``model`` in its current mode is stochastic (dropout modules with p > 0,
    e.g. LoRA dropout, or attention dropout, which HF models apply only in training mode)."""
    if not model.training:
        return False
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 and m.training for m in model.modules()):
        return True
    # the config of the transformers model itself: DDP / FSDP / peft wrappers have none of their own
    return float(getattr(getattr(unwrapped(model), "config", None), "attention_dropout", 0.0) or 0.0) > 0


def contrast_scores(model, batch: dict, factual_nll: torch.Tensor | None = None) -> torch.Tensor:
    """``s_t = log p(y_t | x, P) - log p(y_t | x, P')`` for every target token, on the batch's tail.

    Both passes are teacher-forced, gradient-free and run in eval mode, so both see the same deterministic
    network. Inside training the loss's own per-token NLL is reused as the factual pass (detached) when that
    pass was deterministic: online refresh then costs one extra no-grad forward pass, on the counterfactual
    sequence (the short one: it lacks the profile), and no second cross-entropy over the factual logits. When
    dropout was active in the loss's pass (its NLL carries noise the counterfactual pass would not), the
    factual pass is run again in eval mode: otherwise ``s_t`` would measure dropout noise as well.
    """
    reuse = factual_nll is not None and not has_active_dropout(model)
    was_training = model.training
    model.eval()
    try:
        factual = factual_nll.detach() if reuse else target_nll(model, batch)
        counterfactual = target_nll(model, batch, prefix="cf_")
    finally:
        model.train(was_training)
    return counterfactual - factual


def contrast_logits(model, batch: dict, factual_logits: torch.Tensor, cf_logits: torch.Tensor | None = None):
    """Detached factual and counterfactual logits on the batch's tail, for weights that read both passes'
    whole next-token distributions (NextQuill's). As in contrast_scores, both come from a deterministic
    network: the loss's own passes (``factual_logits``, and ``cf_logits`` when the causal term already ran the
    counterfactual pass with gradient) are reused when no dropout was active in them; otherwise the passes
    that are needed are run again in eval mode, without gradient."""
    stochastic = has_active_dropout(model)
    if cf_logits is not None and not stochastic:
        return factual_logits.detach(), cf_logits.detach()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            factual = target_logits(model, batch) if stochastic else factual_logits.detach()
            counterfactual = target_logits(model, batch, "cf_")
    finally:
        model.train(was_training)
    return factual, counterfactual
