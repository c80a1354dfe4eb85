"""The trained model as one plain module on rank 0, however the training run held it (one process, DDP,
FSDP, DeepSpeed ZeRO)."""

from __future__ import annotations

import torch
from transformers import Trainer

from percontrast_cli.runtime.errors import PercontrastError


def is_sharded(trainer: Trainer) -> bool:
    """Whether the weights are split over the ranks (FSDP, DeepSpeed ZeRO-3): no rank holds the model."""
    if trainer.is_fsdp_enabled:
        return True
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


def trained_model(trainer: Trainer):
    """The trained model as one plain module on rank 0 (None elsewhere); every rank must call this.

    Unsharded (one process, DDP, ZeRO-2) it is the model itself. Sharded, every rank takes part in
    accelerate's gathering of the full state dict (FSDP's full state dict, ZeRO-3's 16-bit consolidation),
    and rank 0 loads it into a fresh copy of the architecture, so the saved checkpoint is complete and loads
    with plain ``AutoModelForCausalLM`` (saving rank 0's own module would write its shards only)."""
    accelerator = trainer.accelerator
    if not is_sharded(trainer):
        return accelerator.unwrap_model(trainer.model) if accelerator.is_main_process else None
    state = accelerator.get_state_dict(trainer.model_wrapped)  # a collective: every rank
    if not accelerator.is_main_process:
        return None
    return rebuilt(accelerator.unwrap_model(trainer.model), state)


def rebuilt(sharded, state: dict):
    """A plain CPU module of ``sharded``'s architecture (and LoRA adapters) holding the full ``state``."""
    from peft import PeftModel, get_peft_model

    peft_config = sharded.peft_config["default"] if isinstance(sharded, PeftModel) else None
    base = sharded.get_base_model() if peft_config is not None else sharded
    with torch.device("meta"):  # no second random initialisation: the weights come from `state`
        model = type(base)(base.config)
        if peft_config is not None:
            model = get_peft_model(model, peft_config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = set(getattr(base, "_tied_weights_keys", None) or {})
    missing = [k for k in missing if not any(k.endswith(t) for t in tied)]
    if missing or unexpected:
        raise PercontrastError(
            f"gathered state dict does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    (model.get_base_model() if peft_config is not None else model).tie_weights()
    # Buffers that are not saved (rotary frequencies) are not sharded either: every rank has them.
    buffers = dict(sharded.named_buffers())
    for name, buffer in model.named_buffers():
        if buffer.is_meta and name in buffers:
            owner, _, leaf = name.rpartition(".")
            model.get_submodule(owner)._buffers[leaf] = buffers[name].detach().to("cpu", copy=True)
    return model
