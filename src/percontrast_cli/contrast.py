"""PerContrast: per-token log-probability differences between the factual and counterfactual contexts."""

from __future__ import annotations

import torch

from percontrast_cli.data.encode import IGNORE
from percontrast_cli.losses import token_nll


def target_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the target tokens, flattened row by row (padding and prompt excluded)."""
    return -token_nll(logits, labels)[labels != IGNORE]


@torch.no_grad()
def sequence_target_logprobs(model, input_ids, attention_mask, labels) -> torch.Tensor:
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return target_logprobs(logits, labels)


def has_active_dropout(model) -> bool:
    """Whether a forward pass of ``model`` in its current mode is stochastic (dropout modules with p > 0,
    e.g. LoRA dropout, or attention dropout, which HF models apply only in training mode)."""
    if not model.training:
        return False
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 and m.training for m in model.modules()):
        return True
    return float(getattr(getattr(model, "config", None), "attention_dropout", 0.0) or 0.0) > 0


def contrast_scores(model, batch: dict[str, torch.Tensor], factual_logits: torch.Tensor | None = None):
    """``s_t = log p(y_t | x, P) - log p(y_t | x, P')`` for every target token of the batch, flattened.

    Both passes are teacher-forced, gradient-free and run in eval mode, so both see the same deterministic
    network. Inside training the loss's own forward pass is reused as the factual pass (detached) when it
    was deterministic: online refresh then costs one extra no-grad forward pass. When dropout was active in
    that pass (its logits carry dropout noise the counterfactual pass would not), the factual pass is run
    again in eval mode instead: otherwise ``s_t`` would measure dropout noise as well as the profile.
    """
    reuse = factual_logits is not None and not has_active_dropout(model)
    was_training = model.training
    model.eval()
    try:
        if reuse:
            factual = target_logprobs(factual_logits.detach(), batch["labels"])
        else:
            factual = sequence_target_logprobs(
                model, batch["input_ids"], batch["attention_mask"], batch["labels"]
            )
        counterfactual = sequence_target_logprobs(
            model, batch["cf_input_ids"], batch["cf_attention_mask"], batch["cf_labels"]
        )
    finally:
        model.train(was_training)
    return factual - counterfactual
