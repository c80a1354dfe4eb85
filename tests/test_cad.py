"""Context-aware decoding (eval.decoding=cad): each step's distribution is p ∝ p(y | x, P) ·
(p(y | x, P) / p(y | x, P'))^alpha, with the counterfactual prompt's own cache carried across steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from percontrast_cli.data.encode import pad_left
from percontrast_cli.evaluation.cad import ContextAwareDecoding
from percontrast_cli.evaluation.generate import generate, prompt_ids


def last_logits(model, ids: list[int]) -> torch.Tensor:
    """The next-token logits of one unpadded sequence: the direct computation."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].double()


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_two_steps_follow_the_cad_formula(model, tokenizer, training_items, alpha):
    items = training_items[:3]
    factual = [prompt_ids(i) for i in items]
    counterfactual = [prompt_ids(i, "cf_") for i in items]
    assert len({len(p) for p in counterfactual}) > 1  # left padding is exercised
    cad = ContextAwareDecoding(model, counterfactual, tokenizer.pad_token_id, alpha, "cpu")
    generated = [[] for _ in items]
    g = torch.Generator().manual_seed(0)
    for _ in range(2):  # the second step reads the counterfactual cache the first one filled
        input_ids = pad_left([f + t for f, t in zip(factual, generated, strict=True)], tokenizer.pad_token_id)
        scores = torch.stack([last_logits(model, f + t) for f, t in zip(factual, generated, strict=True)])
        ours = F.softmax(cad(input_ids, scores.float()).double(), -1)
        for row, (f, c, t) in enumerate(zip(factual, counterfactual, generated, strict=True)):
            p, q = F.softmax(last_logits(model, f + t), -1), F.softmax(last_logits(model, c + t), -1)
            expected = p * (p / q) ** alpha
            torch.testing.assert_close(ours[row], expected / expected.sum(), rtol=1e-4, atol=1e-7)
        for row in range(len(items)):  # the next token: any, drawn (not the argmax: a real continuation)
            generated[row].append(int(torch.randint(3, len(tokenizer), (1,), generator=g)))


def test_cad_changes_greedy_generation_and_alpha_zero_does_not(model, tokenizer, training_items):
    eval_cfg = OmegaConf.create(
        {"max_new_tokens": 6, "temperature": 0.0, "top_p": 1.0, "samples": 1, "batch_size": 4}
    )
    stop = [tokenizer.eos_token_id]

    def run(**decoding):
        cfg = OmegaConf.merge(eval_cfg, {"decoding": "plain", "cad_alpha": 1.0, **decoding})
        return generate(model, tokenizer, training_items, cfg, "cpu", stop)[0]

    plain = run()
    assert run(decoding="cad", cad_alpha=0.0) == plain
    assert run(decoding="cad", cad_alpha=5.0) != plain


def test_report_compares_cad_on_ce_with_the_same_ce_models_decoded_plainly():
    from percontrast_cli.reporting.stats import baseline_of

    def group(loss, decoding, alpha=1.0):
        return {"options": {"loss": loss, "eval.decoding": decoding, "eval.cad_alpha": alpha, "seed": 0}}

    plain, cad, cad_2, perce = (
        group("ce", "plain"),
        group("ce", "cad"),
        group("ce", "cad", 2.0),
        group("perce", "plain"),
    )
    summary = [cad_2, cad, plain, perce]
    assert baseline_of(cad, summary) is plain and baseline_of(cad_2, summary) is plain
    assert baseline_of(plain, summary) is None and baseline_of(perce, summary) is plain
