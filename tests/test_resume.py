"""Nothing lost on a crash: an interrupted training resumes from its last Trainer checkpoint."""

import json

import pytest
from transformers import TrainerCallback

from percontrast_cli.cli.tracking import NullTracker
from percontrast_cli.method.trainer import fit, last_complete_checkpoint

from .test_modeling import PERCE, TRAIN


class Crash(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt("simulated crash")


class CountSteps(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_interrupted_training_resumes_from_its_last_checkpoint(model, tokenizer, training_items, tmp_path):
    train_cfg = TRAIN.copy()
    train_cfg.save_every = 2
    kwargs = dict(
        train_cfg=train_cfg,
        loss_cfg=PERCE,
        online_refresh=True,
        steps=5,
        seed=0,
        work_dir=tmp_path / "work",
        device="cpu",
        tracker=NullTracker(),
        description="t",
    )
    with pytest.raises(KeyboardInterrupt):
        fit(model, tokenizer, training_items, extra_callbacks=(Crash(),), **kwargs)
    assert (tmp_path / "work" / "checkpoint-2").is_dir()
    counter = CountSteps()
    fit(model, tokenizer, training_items, extra_callbacks=(counter,), **kwargs)
    assert counter.steps == [3, 4, 5]  # steps 1-2 came from the checkpoint, not recomputed


def test_half_written_trainer_checkpoint_falls_back_to_the_previous_one(tmp_path):
    work = tmp_path / "work"
    for step, complete in ((2, True), (4, True), (6, False)):
        (work / f"checkpoint-{step}").mkdir(parents=True)
        (work / f"checkpoint-{step}" / "model.safetensors").write_text("w")
        if complete:
            (work / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (work / "checkpoint-10").mkdir()  # a crash before anything was written
    assert last_complete_checkpoint(work) == str(work / "checkpoint-4")
    assert last_complete_checkpoint(tmp_path / "none") is None
