"""NextQuill (loss=nextquill): its weights and causal term, computed inside the trainer's step, against a
direct computation on the tiny model's logits, each sequence run alone."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon

from percontrast_cli.data.encode import IGNORE, Collator, flat_targets, target_count
from percontrast_cli.method.losses import is_weighted, js_weight, token_nll, weight_source
from percontrast_cli.method.trainer import PerCETrainer
from percontrast_cli.modeling.forward import tail, target_logits

from .conftest import loss_config
from .test_losses import _trainer


def trainer_for(model, tokenizer, tmp_path, loss_cfg) -> PerCETrainer:
    return _trainer(model, tokenizer, tmp_path, grad_accum=1, loss=loss_cfg)


def direct_distributions(model, items):
    """Per target token: the next-token distributions with and without the profile (float64), the target."""
    p_rows, q_rows, targets = [], [], []
    with torch.no_grad():
        for item in items:
            n = target_count(item)
            f = model(input_ids=torch.tensor([item["input_ids"]])).logits[0, -n - 1 : -1]
            cf = model(input_ids=torch.tensor([item["cf_input_ids"]])).logits[0, -n - 1 : -1]
            p_rows.append(F.softmax(f.double(), -1))
            q_rows.append(F.softmax(cf.double(), -1))
            targets.append(torch.tensor(item["labels"][-n:]))
    return torch.cat(p_rows), torch.cat(q_rows), torch.cat(targets)


def step_weights(trainer, model, batch):
    """The weights of the trainer's own step (its passes, its reuse of them), one per target token."""
    logits = target_logits(model, batch)
    labels = tail(batch["labels"], batch["keep"])
    weights = trainer.token_weights(model, batch, labels, logits, token_nll(logits, labels))
    return flat_targets(weights.values, batch)


def test_js_weights_are_twice_scipys_jensen_shannon_divergence(model, tokenizer, training_items, tmp_path):
    trainer = trainer_for(
        model, tokenizer, tmp_path, loss_config("nextquill", weighting="js", causal_alpha=0)
    )
    model.train()
    ours = step_weights(trainer, model, Collator(tokenizer.pad_token_id)(training_items)).double()
    p, q, _ = direct_distributions(model, training_items)
    # scipy returns the Jensen-Shannon *distance*, sqrt(JS) (natural log); NextQuill's weight is KL(p||m) +
    # KL(q||m) = 2 JS
    expected = torch.tensor([2 * jensenshannon(a, b) ** 2 for a, b in zip(p.numpy(), q.numpy(), strict=True)])
    assert ours.shape == expected.shape and (expected > 0).all()
    # the untrained model's two distributions nearly agree (JS ~1e-4): a sum of terms that cancel to second
    # order keeps about two digits in fp32 (NextQuill's own computation runs in the logits' dtype, bf16)
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-2)


def test_js_weight_of_distinct_distributions_is_exact_to_fp32():
    g = torch.Generator().manual_seed(0)
    logits, cf_logits = torch.randn(2, 3, 7, 40, generator=g) * 3
    ours = js_weight(logits, cf_logits)
    assert (ours[:, 0] == 0).all()  # label-aligned: the first position predicts no label
    p, q = F.softmax(logits[:, :-1].double(), -1).numpy(), F.softmax(cf_logits[:, :-1].double(), -1).numpy()
    expected = 2 * jensenshannon(p, q, axis=-1) ** 2
    assert expected.min() > 0.05
    np.testing.assert_allclose(ours[:, 1:].numpy(), expected, rtol=1e-5)


def test_target_weights_threshold_the_gain_in_target_probability(model, tokenizer, training_items, tmp_path):
    p, q, y = direct_distributions(model, training_items)
    gain = p.gather(1, y[:, None])[:, 0] - q.gather(1, y[:, None])[:, 0]
    # a threshold in the widest gap among the middle half of the gains: both levels are exercised and no gain
    # sits within float noise of it (the step recomputes the gains on a padded batch: with the median itself
    # as threshold, one token's last-bit difference flipped its level)
    ordered = gain.sort().values
    middle = ordered[len(ordered) // 4 : 3 * len(ordered) // 4]
    widest = int((middle[1:] - middle[:-1]).argmax())
    threshold = float((middle[widest] + middle[widest + 1]) / 2)
    assert float(middle[widest + 1] - middle[widest]) > 1e-7  # gains ~1e-5, their fp32 noise ~1e-9
    cfg = loss_config("nextquill", threshold=threshold, causal_alpha=0)
    trainer = trainer_for(model, tokenizer, tmp_path, cfg)
    ours = step_weights(trainer, model, Collator(tokenizer.pad_token_id)(training_items))
    expected = torch.where(gain > threshold, 0.9, 0.1).float()
    assert 0 < int((expected == 0.9).sum()) < len(expected)
    torch.testing.assert_close(ours, expected)


def test_causal_term_is_the_mean_cross_entropy_of_the_logit_difference(
    model, tokenizer, training_items, tmp_path
):
    """Loss with causal_alpha=c minus the loss with 0 is c * mean_t CE(logits_with - logits_without, y_t) (its
    gradient, through both passes: test_loss_gradients.py)."""
    batch = Collator(tokenizer.pad_token_id)(training_items)
    n = sum(target_count(i) for i in training_items)
    model.train()

    def loss_at(c):
        trainer = trainer_for(model, tokenizer, tmp_path, loss_config("nextquill", causal_alpha=c))
        return trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(n))

    with torch.no_grad():
        difference = loss_at(0.5) - loss_at(0.0)
    rows = []
    for item in training_items:
        k = target_count(item)
        f = model(input_ids=torch.tensor([item["input_ids"]])).logits[0, -k - 1 : -1]
        cf = model(input_ids=torch.tensor([item["cf_input_ids"]])).logits[0, -k - 1 : -1]
        rows.append(F.cross_entropy(f - cf, torch.tensor(item["labels"][-k:]), reduction="none"))
    direct = torch.cat(rows).mean()
    torch.testing.assert_close(difference, 0.5 * direct.detach(), rtol=1e-5, atol=1e-6)


def test_nextquill_is_online_and_alpha_zero_with_a_causal_term_is_not_ce():
    assert weight_source(loss_config("nextquill"), "online") == "online"
    assert weight_source(loss_config("nextquill", weighting="js"), "online") == "online"
    assert is_weighted(loss_config("nextquill", alpha=0))  # the causal term still trains
    assert not is_weighted(loss_config("nextquill", alpha=0, causal_alpha=0))  # exactly CE


def test_labels_of_both_sequences_agree(training_items):
    """The causal term pairs position t of both tails: both sequences must end in the same targets."""
    for item in training_items:
        n = target_count(item)
        assert item["labels"][-n:] == item["cf_labels"][-n:]
        assert IGNORE not in item["cf_labels"][-n:]
