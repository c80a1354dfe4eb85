"""Evaluation: generation + ROUGE, teacher-forced accuracy and loss on personal vs other tokens, and the
estimator's AUROC against the ground-truth personal spans."""

from __future__ import annotations

import numpy as np
import torch
from rich.table import Table

from percontrast_cli.estimate import TokenRecord, auroc
from percontrast_cli.progress import track


def token_metrics(records: list[TokenRecord]) -> dict[str, float]:
    logp = np.concatenate([r.logp for r in records])
    correct = np.concatenate([r.correct for r in records]).astype(float)
    personal = np.concatenate([r.personal for r in records]).astype(bool)
    metrics = {"token_acc": correct.mean(), "token_loss": -logp.mean()}
    for name, mask in (("personal", personal), ("nonpersonal", ~personal)):
        if mask.any():
            metrics[f"{name}_token_acc"] = correct[mask].mean()
            metrics[f"{name}_token_loss"] = -logp[mask].mean()
    value = auroc(records)
    if value is not None:
        metrics["estimator_auroc"] = value
    return {k: float(v) for k, v in metrics.items()}


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], eval_cfg, device) -> list[str]:
    """Batched generation with left padding (decoder-only models continue from the last prompt token)."""
    model.eval()
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    starts = range(0, len(prompts), eval_cfg.batch_size)
    for start in track(starts, total=len(starts), description="generate"):
        enc = tokenizer(
            prompts[start : start + eval_cfg.batch_size],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(device)
        generated = model.generate(
            **enc,
            max_new_tokens=eval_cfg.max_new_tokens,
            do_sample=eval_cfg.do_sample,
            temperature=eval_cfg.temperature if eval_cfg.do_sample else None,
            top_p=eval_cfg.top_p if eval_cfg.do_sample else None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = generated[:, enc["input_ids"].shape[1] :]
        outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return outputs


def metrics_table(metrics: dict[str, float], title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    return table
