"""LoRA through peft, and saving a trained model so that both `percontrast eval` and plain transformers
can load it: ``model/`` always holds full (merged) weights; LoRA runs also keep ``adapter/``."""

from __future__ import annotations

import copy
from pathlib import Path

# peft is imported in the functions: it takes seconds to import, and only a LoRA training run needs it.


def wrap_lora(model, lora_cfg):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules),
    )
    return get_peft_model(model, config)


def save_trained(model, tokenizer, out_dir: Path) -> None:
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.save_pretrained(out_dir / "adapter")
        tokenizer.save_pretrained(out_dir / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")


def save_snapshot(model, tokenizer, out_dir: Path) -> None:
    """`save_trained` of a model whose training goes on: LoRA adapters are merged into a copy."""
    from peft import PeftModel

    save_trained(copy.deepcopy(model) if isinstance(model, PeftModel) else model, tokenizer, out_dir)
