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


def contrast_scores(model, batch: dict[str, torch.Tensor], factual_logits: torch.Tensor | None = None):
    """``s_t = log p(y_t | x, P) - log p(y_t | x, P')`` for every target token of the batch, flattened.

    Both passes are teacher-forced and gradient-free. Inside training the factual logits of the loss's own
    forward pass are reused (detached), so online refresh costs one extra no-grad forward pass.
    """
    if factual_logits is None:
        factual = sequence_target_logprobs(
            model, batch["input_ids"], batch["attention_mask"], batch["labels"]
        )
    else:
        factual = target_logprobs(factual_logits.detach(), batch["labels"])
    counterfactual = sequence_target_logprobs(
        model, batch["cf_input_ids"], batch["cf_attention_mask"], batch["cf_labels"]
    )
    return factual - counterfactual
