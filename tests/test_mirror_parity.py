"""Parity with a second PerCE implementation, MIRROR's train/train_PerCE.py (rabbitrose/MIRROR): on the same
token ids, our estimate path (PerContrast scores) and our training step (PerCE weights and loss) give the
numbers MIRROR's own code gave, stored in tests/fixtures/mirror_parity.json by scripts/mirror_parity.py
(which needs a checkout of MIRROR; this test does not)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import TrainingArguments

from percontrast_cli.data.encode import Collator, flat_targets
from percontrast_cli.method.estimate import teacher_forced_pass
from percontrast_cli.method.losses import token_nll
from percontrast_cli.method.trainer import PerCETrainer
from percontrast_cli.modeling.forward import tail, target_logits

from .conftest import loss_config

ROOT = Path(__file__).parents[1]
EXPECTED = json.loads((ROOT / "tests" / "fixtures" / "mirror_parity.json").read_text())


def parity_script():
    spec = importlib.util.spec_from_file_location("mirror_parity", ROOT / "scripts" / "mirror_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fixture():
    script = parity_script()
    model, tokenizer = script.fixture_model()
    return model, tokenizer, script.fixture_items(tokenizer)


def test_fixture_exercises_both_clip_bounds():
    low, high = EXPECTED["clip"]
    weights = torch.tensor([w for b in EXPECTED["batches"] for w in b["weights"]])
    assert (low, high) == (0.8, 5.0)  # MIRROR's clip is the paper's, which is loss=perce's default
    assert ((weights - low).abs() < 1e-6).any() and ((weights - high).abs() < 1e-6).any()
    assert ((weights > low + 1e-3) & (weights < high - 1e-3)).sum() > 100


@pytest.mark.parametrize("number", range(len(EXPECTED["batches"])))
def test_estimate_and_training_step_match_mirrors_perce(fixture, number, tmp_path):
    model, tokenizer, items = fixture
    expected = EXPECTED["batches"][number]
    chunk = [items[i] for i in expected["items"]]

    # estimate: PerContrast scores = MIRROR's PIR
    records = teacher_forced_pass(model, tokenizer.pad_token_id, chunk, len(chunk), "cpu", "score")
    scores = torch.cat([torch.from_numpy(r.scores) for r in records])
    torch.testing.assert_close(scores, torch.tensor(expected["pir"]), rtol=1e-4, atol=1e-4)

    # training step: the online weights and the loss of loss=perce
    args = TrainingArguments(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, remove_unused_columns=False
    )
    trainer = PerCETrainer(
        model=model,
        args=args,
        train_dataset=[],
        data_collator=Collator(tokenizer.pad_token_id),
        loss_cfg=loss_config("perce"),
        online_refresh=True,
    )
    batch = trainer.data_collator(chunk)
    with torch.no_grad():
        logits = target_logits(model, batch)
        labels = tail(batch["labels"], batch["keep"])
        weights = trainer.token_weights(model, batch, labels, logits, token_nll(logits, labels))
        loss = trainer.compute_loss(model, batch)
    torch.testing.assert_close(
        flat_targets(weights.values, batch), torch.tensor(expected["weights"]), rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(loss, torch.tensor(expected["loss"]), rtol=1e-5, atol=1e-5)
