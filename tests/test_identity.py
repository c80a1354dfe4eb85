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
from percontrast_cli.store import code_scope, identity
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
    return evaluation_identity(ctx_for(*overrides), upstream(), data).id


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


def test_the_global_batch_not_its_split_where_the_loss_is_normalised_over_the_step(data):
    for loss in ("loss=perce", "loss=ce", "loss=dft"):  # token weights that read no other token
        split = checkpoint_id(data, loss, "train.batch_size=2", "train.grad_accum=2")
        assert split == checkpoint_id(data, loss, "train.batch_size=4")


@pytest.mark.parametrize("loss", ["loss=lossce", "loss=entce", "loss.normalize=weights"])
def test_the_split_keys_where_the_weights_read_micro_batch_statistics(data, loss):
    whole = checkpoint_id(data, loss, "train.batch_size=4")
    assert checkpoint_id(data, loss, "train.batch_size=2", "train.grad_accum=2") != whole
    two_processes = ("distributed=ddp", "distributed.num_processes=2", "train.batch_size=2")
    assert checkpoint_id(data, loss, *two_processes) != whole
    # one process at 2 x 2 forms the micro-batches two processes at 2 do, but the process count is keyed too
    assert checkpoint_id(data, loss, *two_processes) != checkpoint_id(
        data, loss, "train.batch_size=2", "train.grad_accum=2"
    )
    assert checkpoint_id(
        data, loss, "loss.alpha=0", "train.batch_size=2", "train.grad_accum=2"
    ) == checkpoint_id(data, "loss=ce")  # alpha 0 is CE: nothing read


def test_deepspeed_keys_its_numeric_mode_ddp_and_fsdp_do_not(data):
    one = checkpoint_id(data, "train.batch_size=2", "train.grad_accum=2")
    layout = ("distributed.num_processes=2", "train.batch_size=2")
    assert checkpoint_id(data, "distributed=ddp", *layout) == one
    assert checkpoint_id(data, "distributed=fsdp", *layout) == one
    zero2 = checkpoint_id(data, "distributed=deepspeed_zero2", *layout)
    zero3 = checkpoint_id(data, "distributed=deepspeed_zero3", *layout)
    assert len({one, zero2, zero3}) == 3


def test_the_effective_lr_warmup_keys_not_the_raw_one(data):
    # 4 steps: the warm-up is capped at max(4 // 10, 1) = 1 step, whatever is asked above that
    assert checkpoint_id(data, "train.lr_warmup_steps=30") == checkpoint_id(data, "train.lr_warmup_steps=5")
    assert checkpoint_id(data, "train.lr_warmup_steps=0") != checkpoint_id(data, "train.lr_warmup_steps=5")


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
    shutil.copytree(code_scope.ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_scope, "ROOT", copy)
    code_scope.code_hash.cache_clear()
    yield copy
    code_scope.code_hash.cache_clear()


def hashes() -> dict:
    code_scope.code_hash.cache_clear()
    return {kind: code_scope.code_hash(kind) for kind in code_scope.KINDS}


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
    for kind in code_scope.KINDS:
        modules = set(code_scope.code_modules(kind))
        assert not modules & {
            "reporting.report",
            "reporting.heatmap",
            "runtime.progress",
            "cli.tracking",
            "cli.main",
            "cli.stages",
            "cli.worker",
        }
    assert {"method.losses", "method.trainer", "method.contrast"} <= set(
        code_scope.code_modules("checkpoint")
    )
    assert {"evaluation.generate", "evaluation.text_metrics"} <= set(code_scope.code_modules("eval"))


def edit(package_copy, relative: str) -> None:
    path = package_copy / relative
    path.write_text(path.read_text() + "\nEDITED = 1  # a change to what this module computes\n")


def test_a_pretrained_lora_checkpoint_runs_neither_the_tiny_model_nor_aloe(data, package_copy):
    smollm2 = ("model=smollm2", "train.peft=lora")
    before = checkpoint_id(data, *smollm2), checkpoint_id(data)
    edit(package_copy, "modeling/tiny.py")
    code_scope.code_hash.cache_clear()
    after_tiny = checkpoint_id(data, *smollm2), checkpoint_id(data)
    assert after_tiny[0] == before[0] and after_tiny[1] != before[1]  # the tiny model's checkpoint re-keys
    for module in ("evaluation/aloe.py", "data/aloe.py", "steps/dialogue.py"):
        edit(package_copy, module)
    code_scope.code_hash.cache_clear()
    assert checkpoint_id(data, *smollm2) == before[0]


def test_a_persona_eval_runs_no_aloe_code_and_no_judge_unless_judged(data, package_copy):
    persona = ("task=persona_email",)
    before = eval_id(data, *persona)
    judged = identity.code_of("eval", composed("eval.judge=smollm2"))
    dialogue = identity.code_of("eval", composed("task=aloe"))
    for module in ("evaluation/aloe.py", "data/aloe.py", "steps/dialogue.py"):
        edit(package_copy, module)
    code_scope.code_hash.cache_clear()
    assert eval_id(data, *persona) == before
    assert identity.code_of("eval", composed("task=aloe")) != dialogue
    edit(package_copy, "evaluation/judge.py")
    code_scope.code_hash.cache_clear()
    assert eval_id(data, *persona) == before  # eval.judge=none runs no judge
    assert identity.code_of("eval", composed("eval.judge=smollm2")) != judged


def test_type_only_imports_are_not_followed(data, package_copy):
    before = estimate_id(data), checkpoint_id(data)
    edit(package_copy, "method/trainer.py")  # the Trainer: what training runs, never scoring
    code_scope.code_hash.cache_clear()
    assert estimate_id(data) == before[0] and checkpoint_id(data) != before[1]
    scoring = package_copy / "steps" / "scoring.py"
    scoring.write_text(
        scoring.read_text().replace(
            "from percontrast_cli.method.score_table import ScoreTable\n",
            "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
            "    from percontrast_cli.method.trainer import ScoreTable\n",
        )
    )
    assert "method.trainer" not in code_scope.code_modules("estimate")


# --- every config leaf is classified ---------------------------------------------------------------------


def option_overrides() -> list[tuple[str, ...]]:
    """The default config, each option of each group, and each experiment preset."""
    conf = code_scope.ROOT / "conf"
    overrides: list[tuple[str, ...]] = [()]
    for group in sorted(p for p in conf.iterdir() if p.is_dir() and p.name not in ("hydra", "__pycache__")):
        overrides += [(f"{group.name}={option.stem}",) for option in sorted(group.glob("*.yaml"))]
    return overrides


def leaves(node, prefix=""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix


def test_every_leaf_of_every_option_and_preset_is_classified():
    from omegaconf import OmegaConf

    unclassified = {}
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        for overrides in option_overrides():
            cfg = OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=False)
            for leaf in leaves(cfg):
                if identity.classify(leaf) is None:
                    unclassified.setdefault(leaf, " ".join(overrides) or "the default config")
    assert not unclassified, "; ".join(
        f"config key {leaf} (in {where}) is not classified: add a row for it to {identity.CLASSIFY_HERE}: "
        "keys(<kinds>, how=...) for the artifact kinds whose id it can change, or never(<why>)"
        for leaf, where in unclassified.items()
    )


def test_every_row_is_documented_and_names_real_kinds():
    docs = (Path(__file__).parent.parent / "docs" / "identity.md").read_text()
    for pattern, leaf in identity.LEAVES.items():
        assert f"`{pattern}`" in docs, f"docs/identity.md does not list `{pattern}`"
        assert set(leaf.kinds) <= set(code_scope.KINDS) and leaf.how


def test_an_unknown_added_key_is_one_line_naming_the_nearest_known_key(tmp_path):
    import os
    import subprocess
    import sys

    def percontrast(*args):
        env = {**os.environ, "PERCONTRAST_OUTPUTS": str(tmp_path / "out")}
        return subprocess.run(
            [sys.executable, "-m", "percontrast_cli.cli", *args], capture_output=True, text=True, env=env
        )

    result = percontrast("run", "experiment=miniature", "+train.lrr=1")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "did you mean train.lr?" in result.stderr and not list((tmp_path / "out").glob("artifacts/*"))
    # a key some option sets (a hub model's revision) and a free-form group take `+`
    shown = percontrast(
        "train",
        "experiment=miniature",
        "+model.revision=main",
        "+distributed.accelerate.extra=1",
        "--cfg",
        "job",
    )
    assert shown.returncode == 0 and "revision: main" in shown.stdout and "extra: 1" in shown.stdout
