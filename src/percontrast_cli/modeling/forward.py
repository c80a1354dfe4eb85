"""Forward passes that compute logits only where a label is.

Batches are left-padded (see data.encode.Collator), so every row's target sits at the end of the sequence and
the last ``keep`` positions (the longest target plus the position that predicts its first token) hold every
logit the loss needs. The model applies its LM head only there (``logits_to_keep``, the transformers API for
this): with a 1,500-token profile prompt and a 300-token target, one fifth of the full-vocabulary logits.
Label-aligned tensors of a batch are its last ``keep`` columns ("tails").
"""

from __future__ import annotations

import functools
import inspect

import torch


def tail(tensor: torch.Tensor, keep: int) -> torch.Tensor:
    return tensor[:, -keep:]


def unwrapped(model):
    """The transformers model under DDP / FSDP / peft wrappers (whose forward passes keyword arguments on)."""
    while hasattr(model, "module"):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@functools.cache
def _accepts_logits_to_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def accepts_logits_to_keep(model) -> bool:
    """Whether the model can apply its LM head to the last positions only."""
    return _accepts_logits_to_keep(type(unwrapped(model)))


def target_logits(model, batch: dict, prefix: str = "") -> torch.Tensor:
    """Logits at the last ``batch["keep"]`` positions of the (``prefix``: counterfactual) sequences."""
    keep = batch["keep"]
    inputs = {
        "input_ids": batch[f"{prefix}input_ids"],
        "attention_mask": batch[f"{prefix}attention_mask"],
        "position_ids": batch[f"{prefix}position_ids"],
        "use_cache": False,  # teacher-forced passes only: a KV cache would be memory for nothing
    }
    if _accepts_logits_to_keep(type(unwrapped(model))):
        return model(**inputs, logits_to_keep=keep).logits
    return tail(model(**inputs).logits, keep)  # models without the option: full logits, then the tail
