"""The bootstrap and the evaluation do what they claim: dropout-free online scores, rounds inside one run,
generation from the scoring prompt, epochs, and the estimator as a classifier."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from percontrast_cli.contrast import contrast_scores, has_active_dropout, target_logprobs
from percontrast_cli.data.encode import IGNORE, Collator, encode_example
from percontrast_cli.errors import PercontrastError
from percontrast_cli.estimate import TokenRecord, classifier_metrics
from percontrast_cli.evaluate import generate, prompt_ids
from percontrast_cli.modeling.lora import wrap_lora
from percontrast_cli.tracking import NullTracker
from percontrast_cli.train import RoundsRefresh, ScoreTable, fit, total_steps
from percontrast_cli.validation import validate_config

from .conftest import loss_config
from .test_modeling import TRAIN


def test_online_scores_ignore_dropout_identical_prompts_give_exactly_zero(model, tokenizer, training_items):
    lora = wrap_lora(
        model, OmegaConf.create({"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj"]})
    )
    with torch.no_grad():  # a non-zero adapter, so its dropout changes the output
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    batch = Collator(tokenizer.pad_token_id)(training_items)
    # the counterfactual is the factual sequence itself: the profile's effect is zero by construction
    batch.update(
        cf_input_ids=batch["input_ids"], cf_attention_mask=batch["attention_mask"], cf_labels=batch["labels"]
    )
    lora.train()
    assert has_active_dropout(lora)
    torch.manual_seed(0)
    training_logits = lora(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    scores = contrast_scores(lora, batch, factual_logits=training_logits)
    assert torch.count_nonzero(scores) == 0
    assert lora.training  # the training mode is restored
    # what reusing the training pass would have measured: dropout noise, not zero
    lora.eval()
    with torch.no_grad():
        clean = lora(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    noise = target_logprobs(training_logits.detach(), batch["labels"]) - target_logprobs(
        clean, batch["labels"]
    )
    assert noise.abs().max() > 1e-4


def test_without_dropout_the_training_pass_is_reused(model, tokenizer, training_items):
    batch = Collator(tokenizer.pad_token_id)(training_items)
    model.train()
    assert not has_active_dropout(model)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    contrast_scores(model, batch, factual_logits=logits)
    assert len(calls) == 2  # the training pass + one counterfactual pass


class RecordingTable(ScoreTable):
    def __init__(self, values):
        super().__init__(values)
        self.seen: list[int] = []

    def lookup(self, index, labels):
        self.seen.extend(index.tolist())
        return super().lookup(index, labels)


class RecordingRefresh(RoundsRefresh):
    def __init__(self, *args):
        super().__init__(*args)
        self.optimizers, self.lr = [], []

    def on_step_begin(self, args, state, control, **kwargs):
        self.optimizers.append(id(kwargs["optimizer"]))
        self.lr.append(kwargs["lr_scheduler"].last_epoch)
        super().on_step_begin(args, state, control, **kwargs)


def test_rounds_refresh_inside_one_run_sees_every_example_and_keeps_the_optimiser(
    model, tokenizer, training_items, tmp_path
):
    lengths = [sum(1 for x in item["labels"] if x != IGNORE) for item in training_items]
    items = [{**item, "index": i} for i, item in enumerate(training_items)]
    table = RecordingTable([torch.zeros(n) for n in lengths])
    rescored = []

    def rescore(step, current_model):
        rescored.append((step, current_model.training))
        return [torch.full((n,), float(step)) for n in lengths]

    refresh = RecordingRefresh(table, [2, 4], rescore)
    fit(
        model,
        tokenizer,
        items,
        train_cfg=TRAIN,  # batch 2: 4 examples are 2 steps an epoch
        loss_cfg=loss_config("perce"),
        online_refresh=False,
        steps=6,
        seed=0,
        work_dir=tmp_path / "work",
        device="cpu",
        tracker=NullTracker(),
        description="rounds",
        score_table=table,
        extra_callbacks=(refresh,),
    )
    assert [step for step, _ in rescored] == [2, 4]  # every steps / rounds, with the current parameters
    assert table.values[0][0].item() == 4.0  # the last refresh is what the last steps used
    assert len(set(refresh.optimizers)) == 1 and len(refresh.optimizers) == 6  # one optimiser throughout
    assert refresh.lr == list(range(6))  # one schedule, never restarted
    assert sorted(table.seen) == sorted(list(range(4)) * 3)  # 6 steps x 2 = every example 3 times


def test_total_steps_from_epochs():
    cfg = OmegaConf.create({"steps": 300, "epochs": None, "batch_size": 4, "grad_accum": 2})
    assert total_steps(cfg, 100) == 300
    cfg.epochs = 3
    assert total_steps(cfg, 100) == 38  # ceil(3 * 25 / 2)
    cfg.epochs = 0.5
    assert total_steps(cfg, 10) == 1


def test_rounds_must_not_exceed_steps(outputs):
    from hydra import compose, initialize_config_module

    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=["estimator.refresh=rounds", "estimator.rounds=5", "train.steps=4"])
        with pytest.raises(PercontrastError, match="estimator.rounds=5 > train.steps=4"):
            validate_config(cfg)
        cfg = compose("config", overrides=["loss.normalize=sum"])
        with pytest.raises(PercontrastError, match="loss.normalize"):
            validate_config(cfg)


def test_generation_starts_from_the_scoring_prompt_ids_with_pinned_decoding(model, tokenizer, splits):
    test = splits["test"]
    # a budget small enough that the prompt is truncated: re-rendering the prompt would give other ids
    items = [encode_example(tokenizer, e, k=5, max_length=96, counterfactual="drop", pool=test) for e in test]
    scoring = Collator(tokenizer.pad_token_id)(items)
    scoring_prompts = [
        row[: int((labels == IGNORE).logical_and(mask.bool()).sum())].tolist()
        for row, labels, mask in zip(
            scoring["input_ids"], scoring["labels"], scoring["attention_mask"], strict=True
        )
    ]
    seen, configs = [], []
    original = model.generate

    def spy(input_ids, attention_mask, generation_config):
        for row, mask in zip(input_ids, attention_mask, strict=True):
            seen.append(row[mask.bool()].tolist())
        configs.append((generation_config, model.generation_config))
        return original(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config
        )

    model.generate = spy
    model.generation_config.repetition_penalty = 3.0  # a checkpoint default that must not leak in
    eval_cfg = OmegaConf.create(
        {"batch_size": 3, "max_new_tokens": 4, "do_sample": False, "temperature": 0.4, "top_p": 0.9}
    )
    outputs = generate(model, tokenizer, items, eval_cfg, torch.device("cpu"), stop_ids=[7, 2])
    assert seen == scoring_prompts == [prompt_ids(item) for item in items]
    assert any(len(p) < len(tokenizer(e.input)["input_ids"]) + 60 for p, e in zip(seen, test, strict=True))
    assert len(outputs) == len(test)
    for config, model_default in configs:
        assert config.repetition_penalty == 1.0 and config.do_sample is False
        assert config.eos_token_id == [7, 2] and config.max_new_tokens == 4
        assert model_default is config  # nothing of the checkpoint's own config can be merged in
    assert model.generation_config.repetition_penalty == 3.0  # restored afterwards


def test_estimator_precision_recall_f1_at_tau():
    record = TokenRecord(
        logp=np.array([0.0, 0.0, 0.0, 0.0, 0.0]),
        cf_logp=np.array([-2.0, -0.5, -1.0, 0.0, -3.0]),  # scores 2, 0.5, 1, 0, 3
        correct=np.ones(5, dtype=bool),
        personal=np.array([True, True, False, False, True]),
    )
    metrics = classifier_metrics([record], tau=0.8)  # predicted personal: scores 2, 1, 3
    assert metrics["estimator_precision"] == pytest.approx(2 / 3)
    assert metrics["estimator_recall"] == pytest.approx(2 / 3)
    assert metrics["estimator_f1"] == pytest.approx(2 / 3)
    assert metrics["estimator_auroc"] == pytest.approx(5 / 6)
    assert classifier_metrics([record], tau=2.5)["estimator_recall"] == pytest.approx(1 / 3)
