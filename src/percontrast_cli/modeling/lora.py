"""LoRA through peft, and saving a trained model so that both `percontrast eval` and plain transformers
can load it: ``model/`` always holds full (merged) weights; LoRA runs also keep ``adapter/``."""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model


def wrap_lora(model, lora_cfg):
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules),
    )
    return get_peft_model(model, config)


def save_trained(model, tokenizer, out_dir: Path) -> None:
    if isinstance(model, PeftModel):
        model.save_pretrained(out_dir / "adapter")
        tokenizer.save_pretrained(out_dir / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")
