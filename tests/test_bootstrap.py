"""The bootstrap and the evaluation do what they claim: dropout-free online scores, rounds inside one run,
generation from the scoring prompt, epochs, and the estimator as a classifier."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from percontrast_cli.cli.tracking import NullTracker
from percontrast_cli.cli.validation import validate_config
from percontrast_cli.data.encode import IGNORE, Collator, encode_example
from percontrast_cli.evaluation.generate import generate, prompt_ids
from percontrast_cli.method.contrast import contrast_scores, has_active_dropout, target_nll
from percontrast_cli.method.estimate import TokenRecord, classifier_metrics
from percontrast_cli.method.losses import token_nll
from percontrast_cli.method.trainer import RoundsRefresh, ScoreTable, fit
from percontrast_cli.modeling.forward import tail, target_logits
from percontrast_cli.modeling.lora import wrap_lora
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.steps.training import total_steps

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
    for key in ("input_ids", "attention_mask", "position_ids", "labels"):
        batch[f"cf_{key}"] = batch[key]
    lora.train()
    assert has_active_dropout(lora)
    torch.manual_seed(0)
    training_nll = token_nll(target_logits(lora, batch), tail(batch["labels"], batch["keep"]))
    scores = contrast_scores(lora, batch, factual_nll=training_nll)
    assert torch.count_nonzero(scores) == 0
    assert lora.training  # the training mode is restored
    # what reusing the training pass would have measured: dropout noise, not zero
    lora.eval()
    noise = target_nll(lora, batch) - training_nll.detach()
    assert noise.abs().max() > 1e-4


def test_without_dropout_the_training_pass_is_reused(model, tokenizer, training_items):
    batch = Collator(tokenizer.pad_token_id)(training_items)
    model.train()
    assert not has_active_dropout(model)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    nll = token_nll(target_logits(model, batch), tail(batch["labels"], batch["keep"]))
    contrast_scores(model, batch, factual_nll=nll)
    assert len(calls) == 2  # the training pass + one counterfactual pass


class RecordingTable(ScoreTable):
    def __init__(self, values):
        super().__init__(values)
        self.seen: list[int] = []

    def lookup(self, batch):
        self.seen.extend(batch["index"])
        return super().lookup(batch)


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


@pytest.mark.parametrize(
    "n, batch, accumulation, epochs",
    [(100, 4, 2, 3), (10, 4, 2, 2), (10, 3, 2, 1.5), (7, 2, 3, 3), (64, 8, 1, 3), (100, 4, 4, 0.5)],
)
def test_epochs_count_the_steps_the_trainer_counts(tmp_path, n, batch, accumulation, epochs):
    """Where the batches of an epoch do not fill the last accumulation window (b % GA != 0), the Trainer
    still ends the epoch with a step: E * ceil(b / GA) steps, not ceil(E * b / GA)."""
    from torch.utils.data import DataLoader
    from transformers import Trainer, TrainingArguments

    cfg = OmegaConf.create({"steps": 300, "epochs": epochs, "batch_size": batch, "grad_accum": accumulation})
    args = TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=epochs, per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation, use_cpu=True, report_to=[],
    )  # fmt: skip
    trainer = Trainer(model=torch.nn.Linear(1, 1), args=args)
    loader = DataLoader(list(range(n)), batch_size=batch)
    trainers_steps = trainer.set_initial_training_values(args, loader)[-1]
    assert total_steps(cfg, n, processes=1) == trainers_steps
    cfg.epochs = None
    assert total_steps(cfg, n, processes=1) == 300


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
    scoring = Collator(tokenizer.pad_token_id)(
        items
    )  # left-padded: the prompt is the real tokens before labels
    scoring_prompts = [
        row[mask.bool() & (labels == IGNORE)].tolist()
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
    eval_cfg = OmegaConf.create({"batch_size": 3, "max_new_tokens": 4})
    outputs, throughput = generate(model, tokenizer, items, eval_cfg, torch.device("cpu"), stop_ids=[7, 2])
    # generation batches by prompt length: compare as sets of rows, and the outputs come back in item order
    assert sorted(seen) == sorted(scoring_prompts) and scoring_prompts == [prompt_ids(item) for item in items]
    assert throughput["generated_tokens"] > 0 and throughput["generation_tokens_per_s"] > 0
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


def test_length_sorted_generation_and_scoring_return_results_in_item_order(model, tokenizer, splits):
    examples = splits["train"]
    items = [
        encode_example(tokenizer, e, k=k, max_length=256, counterfactual="drop", pool=examples)
        for k, e in zip([5, 0, 3, 1, 4, 2, 0, 5], examples, strict=True)
    ]  # prompts of varied lengths

    def echo(input_ids, attention_mask, generation_config):  # "generates" the prompt's last two tokens
        return torch.cat([input_ids, input_ids[:, -2:]], dim=1)

    model.generate = echo
    eval_cfg = OmegaConf.create({"batch_size": 3, "max_new_tokens": 2})
    outputs, _ = generate(model, tokenizer, items, eval_cfg, torch.device("cpu"), stop_ids=[2])
    assert outputs == [tokenizer.decode(prompt_ids(item)[-2:], skip_special_tokens=True) for item in items]

    from percontrast_cli.method.estimate import teacher_forced_pass

    batched = teacher_forced_pass(model, tokenizer.pad_token_id, items, 3, torch.device("cpu"), "t")
    single = teacher_forced_pass(model, tokenizer.pad_token_id, items, 1, torch.device("cpu"), "t")
    for item, a, b in zip(items, batched, single, strict=True):
        assert len(a.logp) == sum(1 for x in item["labels"] if x != IGNORE)
        np.testing.assert_allclose(a.logp, b.logp, atol=1e-4)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
