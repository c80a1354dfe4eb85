import math

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainingArguments

from percontrast_cli.data.encode import Collator
from percontrast_cli.method.losses import CE, normalized, token_nll, token_weights, weighted_nll
from percontrast_cli.method.trainer import PerCETrainer

from .conftest import loss_config, random_batch

V = 50


def weighted_causal_lm_loss(logits, labels, weights=None, num_items=None):
    """The trainer's loss from full logits, as a caller without the target-only fast path would compute it."""
    return weighted_nll(token_nll(logits, labels), labels, weights, num_items)


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


WEIGHTED_LOSSES = [
    ("perce", {}),
    ("perce", {"weighting": "exp_pir"}),
    ("perce", {"weighting": "linear_pir"}),
    ("lossce", {}),
    ("entce", {}),
    ("dft", {}),
]


def weights_for(loss_cfg, logits, labels, scores, ref_nll):
    mask = labels != -100
    nll = token_nll(logits, labels)
    return token_weights(loss_cfg, mask, pir=scores, nll=nll, ref_nll=ref_nll, logits=logits).values


@pytest.mark.parametrize(("name", "overrides"), WEIGHTED_LOSSES)
def test_alpha_zero_is_exactly_cross_entropy_for_every_weighting(name, overrides):
    _, labels, _ = random_batch(V, [8, 6], [5, 3], seed=3)
    logits = torch.randn(2, 8, V, requires_grad=True)
    scores, ref_nll = torch.randn(labels.shape) * 3, torch.rand(labels.shape) * 4
    cfg = loss_config(name, alpha=0.0, **overrides)
    weights = weights_for(cfg, logits, labels, scores, ref_nll)
    assert torch.equal(weights, torch.ones_like(weights))
    ours = weighted_causal_lm_loss(logits, labels, normalized(weights, labels != -100, cfg.normalize))
    ref = reference_ce([logits], [labels])
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(ref, logits)[0])
    # and alpha 1 is not CE: the test above can fail
    weights_one = weights_for(loss_config(name, **overrides), logits, labels, scores, ref_nll)
    assert not torch.equal(weights_one[labels != -100], torch.ones(int((labels != -100).sum())))


def test_paper_weights_at_known_scores():
    """w = clip(PIR, 0.8, 5.0) with PIR = s (the paper's defaults, alpha 1)."""
    scores = torch.tensor([-1.0, 0.0, 0.8, 3.0, 9.0])
    mask = torch.ones_like(scores, dtype=torch.bool)
    weights = token_weights(loss_config("perce"), mask, pir=scores)
    torch.testing.assert_close(weights.values, torch.tensor([0.8, 0.8, 0.8, 3.0, 5.0]))
    assert weights.at_min.tolist() == [True, True, True, False, False]
    assert weights.at_max.tolist() == [False, False, False, False, True]
    # alpha interpolates between CE and the paper: alpha 0.5 halfway
    half = token_weights(loss_config("perce", alpha=0.5), mask, pir=scores).values
    torch.testing.assert_close(half, torch.tensor([0.9, 0.9, 0.9, 2.0, 3.0]))


def test_named_variants_compute_what_their_names_say():
    scores = torch.tensor([-2.0, 0.0, 0.5, 10.0])
    mask = torch.ones_like(scores, dtype=torch.bool)
    exp_pir = token_weights(loss_config("perce", weighting="exp_pir"), mask, pir=scores).values
    torch.testing.assert_close(exp_pir, torch.tensor([1.0, 1.0, math.exp(0.5), 5.0]))
    linear = token_weights(loss_config("perce", weighting="linear_pir", alpha=2.0), mask, pir=scores).values
    torch.testing.assert_close(linear, torch.tensor([1.0, 1.0, 2.0, 1.0 + 2.0 * math.log(5.0)]))


def test_normalize_weights_with_uniform_weights_is_cross_entropy_and_keeps_step_size():
    _, labels, _ = random_batch(V, [7, 5], [4, 2], seed=5)
    logits = torch.randn(2, 7, V, requires_grad=True)
    mask = labels != -100
    uniform = torch.full(labels.shape, 3.0)  # any constant weight
    ours = weighted_causal_lm_loss(logits, labels, normalized(uniform, mask, "weights"))
    ref = reference_ce([logits], [labels])
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(ref, logits)[0])
    # non-uniform weights: sum(w * nll) / sum(w) over the target tokens
    w = torch.rand(labels.shape) + 0.5
    nll = token_nll(logits, labels)
    expected = (w * nll)[mask].sum() / w[mask].sum()
    torch.testing.assert_close(
        weighted_causal_lm_loss(logits, labels, normalized(w, mask, "weights")), expected
    )
    # `tokens` leaves the weights alone: the step grows with the mean weight
    torch.testing.assert_close(
        weighted_causal_lm_loss(logits, labels, normalized(uniform, mask, "tokens")), 3.0 * ref
    )


def _one_row(values):
    """A batch of one row whose positions 1.. are targets, and the per-position tensor of `values`."""
    labels = torch.tensor([[-100] + [1] * len(values)])
    return labels, torch.tensor([[0.0, *values]])


def test_lossce_keeps_the_tokens_with_the_largest_excess_loss():
    labels, nll = _one_row([2.0, 1.0, 3.0, 0.5, 4.0])
    _, ref = _one_row([1.0, 1.5, 0.5, 0.4, 3.9])  # excess: 1.0, -0.5, 2.5, 0.1, 0.1
    mask = labels != -100
    weights = token_weights(loss_config("lossce", keep_ratio=0.4), mask, nll=nll, ref_nll=ref).values
    assert weights[mask].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]  # ceil(0.4 * 5) = 2 kept: positions 1 and 3
    half = token_weights(loss_config("lossce", keep_ratio=0.4, alpha=0.5), mask, nll=nll, ref_nll=ref).values
    assert half[mask].tolist() == [1.0, 0.5, 1.0, 0.5, 0.5]


def test_entce_weights_relative_predictive_entropy():
    # position 1 predicts uniformly over V (entropy log V), position 2 is certain (entropy ~0)
    logits = torch.tensor([[[0.0] * 4, [100.0, 0.0, 0.0, 0.0], [0.0] * 4]])
    labels = torch.tensor([[-100, 2, 0]])
    mask = labels != -100
    weights = token_weights(loss_config("entce"), mask, logits=logits).values
    # H = (log 4, 0), mean = log(4) / 2: relative entropies 2 and 0
    torch.testing.assert_close(weights[mask], torch.tensor([2.0, 0.0]), atol=1e-4, rtol=0)


def test_dft_weight_is_the_detached_target_probability():
    labels, nll = _one_row([math.log(2.0), math.log(4.0), 0.0])
    mask = labels != -100
    weights = token_weights(loss_config("dft"), mask, nll=nll).values
    torch.testing.assert_close(weights[mask], torch.tensor([0.5, 0.25, 1.0]))
    half = token_weights(loss_config("dft", alpha=0.5), mask, nll=nll).values
    torch.testing.assert_close(half[mask], torch.tensor([0.75, 0.625, 1.0]))


def test_perce_changes_the_loss_toward_personal_tokens():
    _, labels, _ = random_batch(V, [6], [4], seed=4)
    logits = torch.randn(1, 6, V)
    scores = torch.zeros(labels.shape)
    scores[0, 3] = 2.0  # one strongly personal token
    weights = token_weights(loss_config("perce"), labels != -100, pir=scores).values
    weighted = weighted_causal_lm_loss(logits, labels, weights)
    nll = token_nll(logits, labels)
    expected = (0.8 * nll.sum() + (2.0 - 0.8) * nll[0, 3]) / int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(weighted, expected)


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
        loss_cfg=loss,
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
    out = model(
        input_ids=full["input_ids"], attention_mask=full["attention_mask"], position_ids=full["position_ids"]
    )
    ref = reference_ce_vocab(out.logits, full["labels"])
    ref.backward()
    grads_ref = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    trainer = _trainer(model, tokenizer, tmp_path, grad_accum=2, loss=CE)
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


@pytest.mark.parametrize(
    "name, overrides, bound",
    [
        ("perce", {}, 5.0),  # 1 + alpha * (0.8 - 1) >= 0
        ("entce", {}, 1.0),  # clip_min 0
        ("lossce", {}, 1.0),  # an unkept token: 1 - alpha
        ("dft", {}, 1.0),  # a token of probability ~0: 1 - alpha
    ],
)
def test_weights_that_can_go_negative_are_refused_per_weighting(name, overrides, bound):
    from percontrast_cli.method.losses import negative_weights

    assert negative_weights(loss_config(name, alpha=bound, **overrides)) is None
    problem = negative_weights(loss_config(name, alpha=bound * 1.2, **overrides))
    assert problem is not None and "loss.alpha" in problem and "< 0" in problem and "\n" not in problem
    # the rule is what token_weights computes: at the bound the lowest weight is 0, above it negative
    mask = torch.ones(1, 3, dtype=torch.bool)
    lowest = {
        "perce": dict(pir=torch.full((1, 3), -10.0)),
        "entce": dict(logits=torch.zeros(1, 3, 8).index_fill_(2, torch.tensor([0]), 30.0)),
        "lossce": dict(nll=torch.tensor([[1.0, 2.0, 3.0]]), ref_nll=torch.zeros(1, 3)),
        "dft": dict(nll=torch.full((1, 3), 50.0)),
    }[name]
    if name == "entce":  # one position certain (entropy ~0), the others uniform: relative entropy ~0 there
        lowest["logits"] = torch.cat([torch.zeros(1, 2, 8), lowest["logits"][:, :1]], dim=1)
    cfg = loss_config(name, alpha=bound * 1.2, **overrides)
    if name == "lossce":
        cfg.keep_ratio = 0.5
    weights = token_weights(cfg, mask, **lowest).values
    assert float(weights.min()) < 0
    assert (
        float(token_weights(loss_config(name, alpha=bound, **overrides), mask, **lowest).values.min())
        >= -1e-6
    )
    only = {
        "perce": ["perce", {"weighting": "exp_pir"}],
        "entce": ["perce", {"weighting": "linear_pir"}],
    }.get(name)
    if only:  # never below 1, whatever alpha
        assert negative_weights(loss_config(only[0], alpha=50.0, **only[1])) is None
