import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers import TrainingArguments

from percontrast_cli.data.encode import Collator
from percontrast_cli.losses import token_weights, weighted_causal_lm_loss
from percontrast_cli.train import PerCETrainer

from .conftest import random_batch

V = 50


def reference_ce(logits_list, labels_list):
    """Plain mean CE over every target token of all micro-batches, via torch's own cross_entropy."""
    logits = torch.cat([lg[:, :-1].reshape(-1, V) for lg in logits_list])
    labels = torch.cat([lb[:, 1:].reshape(-1) for lb in labels_list])
    return F.cross_entropy(logits, labels, ignore_index=-100)


def test_uniform_weights_match_cross_entropy_loss_and_grad():
    _, labels, _ = random_batch(V, [7, 5, 9], [3, 2, 4], seed=0)
    logits = torch.randn(3, 9, V, requires_grad=True)
    ours = weighted_causal_lm_loss(logits, labels, torch.ones(labels.shape))
    (grad_ours,) = torch.autograd.grad(ours, logits)
    ref = reference_ce([logits], [labels])
    (grad_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(grad_ours, grad_ref)


def test_accumulation_over_unequal_micro_batches_matches_cross_entropy():
    micro = [random_batch(V, [12, 4], [8, 1], seed=1), random_batch(V, [5], [2], seed=2)]
    logits = [torch.randn(lb.shape[0], lb.shape[1], V, requires_grad=True) for _, lb, _ in micro]
    labels = [lb for _, lb, _ in micro]
    total = sum(int((lb[:, 1:] != -100).sum()) for lb in labels)
    ours = sum(
        weighted_causal_lm_loss(lg, lb, torch.ones(lb.shape), total)
        for lg, lb in zip(logits, labels, strict=True)
    )
    grads_ours = torch.autograd.grad(ours, logits)
    ref = reference_ce(logits, labels)
    grads_ref = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(grads_ours, grads_ref, strict=True):
        torch.testing.assert_close(a, b)
    # The naive mean of per-micro-batch means differs here: the normalisation matters.
    naive = sum(weighted_causal_lm_loss(lg, lb) for lg, lb in zip(logits, labels, strict=True)) / 2
    assert not torch.allclose(naive, ref)


@pytest.mark.parametrize("weighting", ["pir", "linear"])
def test_alpha_zero_perce_is_exactly_ce(weighting):
    _, labels, _ = random_batch(V, [8, 6], [5, 3], seed=3)
    logits = torch.randn(2, 8, V)
    scores = torch.randn(labels.shape) * 3
    weights = token_weights(scores, weighting, alpha=0.0, max_weight=5.0)
    assert torch.equal(weights, torch.ones_like(scores))
    assert torch.equal(
        weighted_causal_lm_loss(logits, labels, weights), weighted_causal_lm_loss(logits, labels)
    )


def test_weightings_upweight_positive_contrast_and_cap():
    scores = torch.tensor([-2.0, 0.0, 0.5, 10.0])
    pir = token_weights(scores, "pir", alpha=1.0, max_weight=5.0)
    torch.testing.assert_close(pir, torch.tensor([1.0, 1.0, 0.5**0 * torch.tensor(0.5).exp().item(), 5.0]))
    linear = token_weights(scores, "linear", alpha=2.0, max_weight=5.0)
    cap = torch.tensor(5.0).log().item()
    torch.testing.assert_close(linear, torch.tensor([1.0, 1.0, 2.0, 1.0 + 2.0 * cap]))


def test_perce_changes_the_loss_toward_personal_tokens():
    _, labels, _ = random_batch(V, [6], [4], seed=4)
    logits = torch.randn(1, 6, V)
    scores = torch.zeros(labels.shape)
    scores[0, 3] = 2.0  # one strongly personal token
    weighted = weighted_causal_lm_loss(logits, labels, token_weights(scores, "pir", 1.0, 5.0))
    assert weighted > weighted_causal_lm_loss(logits, labels)


def _trainer(model, tokenizer, tmp_path, grad_accum, loss):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=grad_accum,
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
    )
    return PerCETrainer(
        model=model,
        args=args,
        train_dataset=[],
        data_collator=Collator(tokenizer.pad_token_id),
        loss_cfg=OmegaConf.create(loss),
        online_refresh=True,
    )


def test_trainer_step_under_accumulation_matches_full_batch_cross_entropy(model, tokenizer, tmp_path):
    """The Trainer path: two unequal micro-batches with the window's token count give full-batch CE grads."""
    collate = Collator(tokenizer.pad_token_id)
    rows = [
        {
            "input_ids": list(range(5, 25)),
            "labels": [-100] * 8 + list(range(13, 25)),
            "personal": [False] * 12,
        },
        {"input_ids": list(range(30, 36)), "labels": [-100] * 4 + [34, 35], "personal": [False] * 2},
        {"input_ids": list(range(40, 51)), "labels": [-100] * 10 + [50], "personal": [False]},
    ]
    full = collate(rows)
    model.zero_grad()
    out = model(input_ids=full["input_ids"], attention_mask=full["attention_mask"])
    ref = reference_ce_vocab(out.logits, full["labels"])
    ref.backward()
    grads_ref = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    trainer = _trainer(
        model, tokenizer, tmp_path, grad_accum=2, loss={"weighting": "none", "alpha": 0.0, "max_weight": 1.0}
    )
    micro = [collate(rows[:1]), collate(rows[1:])]
    total = sum(int((m["labels"][:, 1:] != -100).sum()) for m in micro)
    losses = [trainer.training_step(model, m, num_items_in_batch=total) for m in micro]
    torch.testing.assert_close(sum(losses), ref.detach())
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, grads_ref[name], msg=name)


def reference_ce_vocab(logits, labels):
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100
    )
