"""Artifact identity through the real path: the ids the steps compute from composed configs change with every
setting an identity declares, and with nothing else (tests the functions the steps call, not a copy)."""

import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from percontrast_cli.steps.context import Context
from percontrast_cli.steps.evaluation import evaluation_identity
from percontrast_cli.steps.scoring import training_set_identity
from percontrast_cli.steps.task_data import load_task
from percontrast_cli.steps.training import training_identity
from percontrast_cli.store import identity
from percontrast_cli.store.artifacts import Artifact

BASE = ("experiment=miniature",)


def composed(*overrides):
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        return compose("config", overrides=[*BASE, *overrides])


def ctx_for(*overrides, device="cpu"):
    return Context(composed(*overrides), None, torch.device(device), None)


def upstream(kind="checkpoint", artifact_id="start0"):
    return Artifact(kind, artifact_id, Path("/nowhere"), {"inputs": {"tokenizer": "tok0"}})


@pytest.fixture(scope="module")
def data():
    return load_task(composed())


def checkpoint_id(data, *overrides, scores=None):
    ctx = ctx_for(*overrides)
    return training_identity(ctx, upstream(), data, ctx.cfg.loss, 4, scores).id


def estimate_id(data, *overrides):
    return training_set_identity(ctx_for(*overrides), "estimate", upstream(), data).id


def eval_id(data, *overrides):
    return evaluation_identity(ctx_for(*overrides), upstream(), data.test).id


# --- checkpoints -----------------------------------------------------------------------------------------

CHECKPOINT_IGNORES = [
    "estimator.tau=0.5",  # an eval-time threshold
    "estimator.batch_size=7",
    "train.log_every=7",
    "train.save_every=9",
    "train.gradient_checkpointing=true",
    "train.lora.r=64",  # LoRA settings count only with peft=lora
    "train.steps=11",  # the steps trained are recorded apart, as passed
    "train.warmup_steps=3",  # keys the warm-up, the main training's `start` input
    "train.warmup_lr=0.5",
    "eval.max_new_tokens=3",
    "report.out_dir=elsewhere",
    "tracker=wandb",
    "model.dtype=float32",  # what auto resolves to on a CPU
    "estimator.rounds=3",  # only with refresh=rounds
]


@pytest.mark.parametrize("override", CHECKPOINT_IGNORES)
def test_settings_that_cannot_change_the_weights_keep_the_checkpoint_id(data, override):
    assert checkpoint_id(data, override) == checkpoint_id(data)


CHECKPOINT_KEYS = [
    "train.lr=0.1",
    "train.peft=lora",
    "model.chat_template=true",
    "model.max_length=300",
    "seed=3",
    "loss.alpha=0.5",
    "loss.clip_max=4",
    "estimator.counterfactual=empty",  # online PerCE's weights come from it
    "estimator.refresh=rounds",
    "retrieval.k=2",
    "prompt.style=longlamp",
    "model.dtype=bfloat16",
    "train.batch_size=2",  # the global batch
]


@pytest.mark.parametrize("override", CHECKPOINT_KEYS)
def test_settings_that_change_the_weights_change_the_checkpoint_id(data, override):
    assert checkpoint_id(data, override) != checkpoint_id(data)


def test_every_ce_equivalent_setting_trains_one_checkpoint(data):
    assert (
        checkpoint_id(data, "loss=ce")
        == checkpoint_id(data, "loss.alpha=0")
        == checkpoint_id(data, "loss=perce", "loss.alpha=0", "estimator.counterfactual=empty")
    )


def test_rounds_count_only_under_rounds_refresh(data):
    rounds = ("estimator.refresh=rounds",)
    assert checkpoint_id(data, *rounds, "estimator.rounds=3") != checkpoint_id(data, *rounds)


def test_the_global_batch_not_its_split(data):
    assert checkpoint_id(data, "train.batch_size=2", "train.grad_accum=2") == checkpoint_id(data)


def test_auto_precision_keys_as_what_it_resolved_to(data):
    ctx = ctx_for("model.dtype=auto")
    assert ctx.precision == "float32"  # on this CPU
    assert checkpoint_id(data, "model.dtype=auto") == checkpoint_id(data, "model.dtype=float32")


def test_scores_read_by_the_weights_are_an_input(data):
    one, two = upstream("estimate", "e1"), upstream("estimate", "e2")
    rounds = ("estimator.refresh=rounds",)
    assert checkpoint_id(data, *rounds, scores=one) != checkpoint_id(data, *rounds, scores=two)


# --- estimates and evals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    ["estimator.tau=0.5", "estimator.batch_size=3", "train.lr=0.1", "loss=ce", "eval.max_new_tokens=3"],
)
def test_estimate_id_ignores_what_cannot_change_its_scores(data, override):
    assert estimate_id(data, override) == estimate_id(data)


@pytest.mark.parametrize(
    "override",
    ["estimator.counterfactual=empty", "retrieval.k=2", "prompt.style=longlamp", "model.max_length=300"],
)
def test_estimate_id_follows_its_prompt_settings(data, override):
    assert estimate_id(data, override) != estimate_id(data)


def test_greedy_eval_ignores_seed_and_sampling_knobs_sampling_does_not(data):
    assert eval_id(data, "seed=3") == eval_id(data) == eval_id(data, "eval.top_p=0.5")
    assert eval_id(data, "eval.temperature=0") == eval_id(data, "eval.temperature=0.0") == eval_id(data)
    sampled = ("eval.temperature=0.4",)
    assert eval_id(data, *sampled, "seed=3") != eval_id(data, *sampled) != eval_id(data)
    assert eval_id(data, *sampled, "eval.top_p=0.9") != eval_id(data, *sampled)
    assert eval_id(data, *sampled, "eval.samples=2") != eval_id(data, *sampled)
    assert eval_id(data, "eval.max_new_tokens=9") != eval_id(data)
    assert eval_id(data, "estimator.tau=0.5") != eval_id(data)  # its precision/recall/F1 are at tau
    assert eval_id(data, "model.chat_template=true") != eval_id(data)
    assert eval_id(data, "eval.judge=") == eval_id(data, "eval.judge=null") == eval_id(data)  # no judge


def test_an_id_is_a_fingerprint_of_kind_config_and_inputs():
    a = identity.Identity("estimate", {"k": 1}, {"data": "d1"}).id
    assert a == identity.Identity("estimate", {"k": 1}, {"data": "d1"}).id
    assert a != identity.Identity("estimate", {"k": 2}, {"data": "d1"}).id
    assert a != identity.Identity("estimate", {"k": 1}, {"data": "d2"}).id
    assert a != identity.Identity("reference", {"k": 1}, {"data": "d1"}).id


# --- code ------------------------------------------------------------------------------------------------


@pytest.fixture()
def package_copy(tmp_path, monkeypatch):
    copy = tmp_path / "percontrast_cli"
    shutil.copytree(identity.ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(identity, "ROOT", copy)
    identity.code_hash.cache_clear()
    yield copy
    identity.code_hash.cache_clear()


def hashes() -> dict:
    identity.code_hash.cache_clear()
    return {kind: identity.code_hash(kind) for kind in identity.KINDS}


def test_comments_docstrings_and_display_modules_never_key_an_artifact(package_copy):
    before = hashes()
    losses = package_copy / "method" / "losses.py"
    losses.write_text(
        losses.read_text().replace('"""', '"""An edited docstring. ', 1) + "\n# a comment at the end\n"
    )
    for display in (
        "reporting/report.py",
        "runtime/progress.py",
        "reporting/heatmap.py",
        "cli/tracking.py",
        "cli/stages.py",
    ):
        path = package_copy / display
        path.write_text(path.read_text() + "\nEDITED = 1  # any edit\n")
    assert hashes() == before


def test_a_code_change_rekeys_exactly_the_kinds_that_run_it(package_copy):
    before = hashes()
    losses = package_copy / "method" / "losses.py"
    losses.write_text(losses.read_text().replace("clamp_min(1e-12)", "clamp_min(1e-11)"))
    after = hashes()
    assert after["checkpoint"] != before["checkpoint"]
    assert after["model"] == before["model"]  # building the tiny model runs no loss


def test_display_and_launch_modules_are_in_no_kinds_code():
    for kind in identity.KINDS:
        modules = set(identity.code_modules(kind))
        assert not modules & {
            "reporting.report",
            "reporting.heatmap",
            "runtime.progress",
            "cli.tracking",
            "cli.main",
            "cli.stages",
            "cli.worker",
        }
    assert {"method.losses", "method.trainer", "method.contrast"} <= set(identity.code_modules("checkpoint"))
    assert {"evaluation.generate", "evaluation.text_metrics"} <= set(identity.code_modules("eval"))
