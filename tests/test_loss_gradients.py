"""Every weighting and normaliser of the trainer's loss against a plain implementation: each sequence run
alone (no padding), full-vocabulary logits at every position, the weights written out from their formulas.
The loss, its gradient with respect to the logits and to the LM head must agree, in fp32 and under bf16
autocast.

Why: the trainer projects only the label tail through the LM head (``logits_to_keep``), left-pads, reuses the
loss's pass for the weights and divides by the step's token count; a weighted loss's gradient can go wrong
silently in such a fast path (Liger-Kernel #1298: wrong grad_weight for non-uniform per-token gradients)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainingArguments

from percontrast_cli.data.encode import Collator, target_count
from percontrast_cli.method import trainer as trainer_module
from percontrast_cli.method.trainer import PerCETrainer, ScoreTable

from .conftest import loss_config

# (loss config, overrides): every weighting, NextQuill's with and without its causal term
LOSSES = [
    ("ce", {}),
    ("perce", {}),
    ("lossce", {"keep_ratio": 0.5}),
    ("entce", {}),
    ("dft", {}),
    ("nextquill", {}),  # target + causal term
    ("nextquill", {"weighting": "js", "causal_alpha": 0.0}),
    ("nextquill", {"weighting": "js", "causal_alpha": 0.3}),
]
NORMALIZERS = ["tokens", "weights", "abs_weights"]
# fp32: the two paths differ only in summation order. bf16 autocast: the LM head and the layers' matmuls run
# in bf16 (8 bits of mantissa) over differently padded batches, so logits differ by ~1e-2 relative; the
# tolerances are relative to each tensor's largest entry.
# JS weights of two nearly equal distributions (the untrained tiny model's: JS ~1e-4) are sums of terms that
# cancel to second order, so fp32 keeps about three digits of them (ours: fp32; the reference: float64).
TOLERANCE = {"fp32": 1e-5, "bf16": 3e-2}
JS_FP32_TOLERANCE = 1e-3


def plain_loss(loss_cfg, model, items, ref_nll: list[torch.Tensor]):
    """The loss written out from the formulas in docs/reference.md, one unpadded sequence at a time; returns
    the loss and each item's full factual logits (for their gradients)."""
    factual, cf_rows, targets, full = [], [], [], []
    for item in items:
        n = target_count(item)
        logits = model(input_ids=torch.tensor([item["input_ids"]])).logits[0]
        logits.retain_grad()
        full.append(logits)
        cf = model(input_ids=torch.tensor([item["cf_input_ids"]])).logits[0]
        factual.append(logits[-n - 1 : -1])  # the positions that predict the n targets
        cf_rows.append(cf[-n - 1 : -1])
        targets.append(torch.tensor(item["labels"][-n:]))
    f, cf, y = torch.cat(factual).float(), torch.cat(cf_rows).float(), torch.cat(targets)
    logp, logq = F.log_softmax(f, -1), F.log_softmax(cf, -1)
    nll = -logp.gather(1, y[:, None])[:, 0]
    # the weights in float64: the reference for ours, not a second fp32 computation with the same rounding
    w = plain_weights(loss_cfg, logp.detach().double(), logq.detach().double(), y, torch.cat(ref_nll)).float()
    how = loss_cfg.normalize
    denominator = {"tokens": len(y), "weights": w.sum(), "abs_weights": w.abs().sum()}[how]
    loss = (w * nll).sum() / denominator
    if loss_cfg.causal_alpha:
        causal = -F.log_softmax(f - cf, -1).gather(1, y[:, None])[:, 0]
        loss = loss + loss_cfg.causal_alpha * causal.mean()
    return loss, full


def plain_weights(cfg, logp, logq, y, ref_nll):
    at_y = lambda t: t.gather(1, y[:, None])[:, 0]  # noqa: E731
    a, w = float(cfg.alpha), None
    if cfg.weighting == "none":
        return torch.ones(len(y), dtype=logp.dtype)
    if cfg.weighting == "clip_pir":
        w = (at_y(logp) - at_y(logq)).clamp(cfg.clip_min, cfg.clip_max)
    elif cfg.weighting == "excess_loss":
        excess = -at_y(logp) - ref_nll
        w = torch.zeros(len(y), dtype=logp.dtype)
        w[excess.topk(math.ceil(cfg.keep_ratio * len(y))).indices] = 1.0
    elif cfg.weighting == "entropy":
        entropy = -(logp.exp() * logp).sum(-1)
        w = (entropy / entropy.mean()).clamp(cfg.clip_min, cfg.clip_max)
    elif cfg.weighting == "target_prob":
        w = at_y(logp).exp()
    elif cfg.weighting == "js":
        p, q = logp.exp(), logq.exp()
        m = (p + q) / 2
        w = (p * (p / m).log()).sum(-1) + (q * (q / m).log()).sum(-1)
    elif cfg.weighting == "target":
        raised = at_y(logp).exp() - at_y(logq).exp() > cfg.threshold
        w = torch.where(raised, cfg.clip_max, cfg.clip_min)
    return 1 + a * (w - 1)


@pytest.fixture()
def setup(model, tokenizer, training_items, tmp_path):
    items = [dict(item, index=i) for i, item in enumerate(training_items)]
    assert len({len(i["input_ids"]) for i in items}) > 1  # rows of different lengths: real padding
    g = torch.Generator().manual_seed(0)
    ref_nll = [torch.rand(target_count(i), generator=g) * 4 for i in items]
    args = TrainingArguments(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, remove_unused_columns=False
    )
    trainer = PerCETrainer(
        model=model,
        args=args,
        train_dataset=items,
        data_collator=Collator(tokenizer.pad_token_id),
        loss_cfg=loss_config("ce"),
        online_refresh=True,
        score_table=ScoreTable(ref_nll),
    )
    return trainer, items, ref_nll


def our_loss(trainer, model, items, monkeypatch):
    """The trainer's compute_loss on one micro-batch that is the whole step; returns the loss and the factual
    tail logits it projected (kept for their gradient)."""
    captured = []
    original = trainer_module.target_logits

    def keep_factual(model, batch, prefix=""):
        logits = original(model, batch, prefix)
        if prefix == "" and logits.requires_grad and not captured:
            logits.retain_grad()
            captured.append(logits)
        return logits

    monkeypatch.setattr(trainer_module, "target_logits", keep_factual)
    batch = trainer.data_collator(items)
    n = sum(target_count(i) for i in items)
    loss = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(n))
    return loss, captured[0], batch["keep"]


def as_tail(full: list[torch.Tensor], keep: int) -> torch.Tensor:
    """Each item's full-logit gradient laid out like the trainer's left-padded (rows, keep) tail."""
    out = torch.zeros(len(full), keep, full[0].shape[-1])
    for row, grad in enumerate(full):
        m = min(keep, grad.shape[0])
        out[row, keep - m :] = grad[-m:]
    return out


def close(ours, reference, tolerance, what):
    scale = reference.abs().max().clamp_min(1e-12)
    error = (ours.float() - reference.float()).abs().max() / scale
    assert error <= tolerance, f"{what}: max error {error:.2e} of the largest entry (tolerance {tolerance})"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("normalize", NORMALIZERS)
@pytest.mark.parametrize("name,overrides", LOSSES, ids=[f"{n}-{o}" for n, o in LOSSES])
def test_loss_and_gradients_match_the_plain_full_vocabulary_loss(
    setup, model, monkeypatch, name, overrides, normalize, precision
):
    trainer, items, ref_nll = setup
    trainer.loss_cfg = loss_config(name, normalize=normalize, **overrides)
    model.train()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    head = model.lm_head.weight

    model.zero_grad()
    with autocast:
        ours, tail_logits, keep = our_loss(trainer, model, items, monkeypatch)
    ours.backward()
    ours_head, ours_logits = head.grad.clone(), tail_logits.grad.float()

    model.zero_grad()
    with autocast:
        reference, full = plain_loss(trainer.loss_cfg, model, items, ref_nll)
    reference.backward()

    tolerance = TOLERANCE[precision]
    if precision == "fp32" and trainer.loss_cfg.weighting == "js":
        tolerance = JS_FP32_TOLERANCE
    close(ours.detach(), reference.detach(), tolerance, "loss")
    close(ours_logits, as_tail([f.grad.float() for f in full], keep), tolerance, "d loss / d logits")
    close(ours_head, head.grad, tolerance, "d loss / d lm_head")
