"""The claims studies: presets that sweep what the issue asks, cross-task evaluation that records both tasks,
a study script that skips every finished job on a rerun, and the report's paired differences and plots."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from percontrast_cli.cli.validation import validate_config
from percontrast_cli.reporting import stats

from .test_end_to_end import artifact_ids

STUDIES = {
    "claims_methods": {
        "loss": "ce,perce,lossce,entce,dft,nextquill",
        "seed": "0,1,2",
        "train.steps": "150,450",
    },
    "claims_lr": {"loss": "ce,perce", "seed": "0,1"},
    "claims_transfer": {"task": "persona_email,persona_review,persona_topic", "loss": "ce,perce"},
    "claims_strength": {"loss.alpha": "0.5,1,2", "loss.clip_max": "2,5,10"},
}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_study_presets_compose_validate_and_sweep_what_they_claim(study):
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={study}"], return_hydra_config=True)
    validate_config(cfg)
    assert cfg.task.name.startswith("persona_")
    params = cfg.hydra.sweeper.params
    for key, values in STUDIES[study].items():
        assert params[key] == values, key
    assert cfg.hydra.sweep.dir.endswith(f"hydra/{study}")
    if study == "claims_lr":  # every learning rate starts from the same warm-up
        assert cfg.train.warmup_lr == 2e-3
        assert len(params["train.lr"].split(",")) >= 4


TINY = (
    "train.warmup_steps=4 train.steps=2 train.batch_size=4 train.log_every=2 train.save_every=2 "
    "task.n_train_users=4 task.n_test_users=2 task.examples_per_user=1 model.vocab_size=400 "
    "model.hidden_size=32 model.intermediate_size=64 model.num_heads=2 eval.max_new_tokens=8"
)


def claims(study, root, cwd, overrides=TINY, expect=0, **env_vars):
    env = {
        **os.environ,
        "PERCONTRAST_OUTPUTS": str(root),
        "CLAIMS_OVERRIDES": overrides,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **env_vars,
    }
    script = Path(__file__).parents[1] / "scripts" / "claims.sh"
    result = subprocess.run(["bash", str(script), study], capture_output=True, text=True, cwd=cwd, env=env)
    assert result.returncode == expect, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_pretrained_preset_is_smollm2_full_fine_tuning_with_at_least_30_test_users():
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=claims_pretrained"], return_hydra_config=True)
    validate_config(cfg)
    assert cfg.model.name == "smollm2" and cfg.train.peft == "none" and cfg.task.name == "persona_email"
    assert cfg.task.n_test_users >= 30 and cfg.task.n_test_users * cfg.task.examples_per_user >= 60
    assert cfg.hydra.sweep.dir.endswith("hydra/claims_pretrained")


# The pretrained study at a miniature size: the tiny model stands in for SmolLM2 (no warm-up: the shared CE
# start plays its part), a few users and steps.
PRETRAINED_TINY = (
    "model=tiny train.warmup_steps=0 train.batch_size=4 train.log_every=2 train.save_every=2 "
    "task.n_train_users=4 task.n_test_users=2 task.examples_per_user=1 model.vocab_size=400 "
    "model.hidden_size=32 model.intermediate_size=64 model.num_heads=2 eval.max_new_tokens=8 "
    "eval.meteor=false"
)
# One seed per arm: the study's structure (shared start, gate, four arms, report) is what is tested here; the
# report's pairing over several seeds is tested in test_report.py.
PRETRAINED_SIZES = {"PRETRAINED_START_STEPS": "4", "PRETRAINED_STEPS": "2", "PRETRAINED_SEEDS": "0"}


@pytest.mark.slow
def test_pretrained_study_stops_at_a_failed_plateau_gate_then_runs_and_reports(tmp_path):
    root = tmp_path / "out"
    sweeps = root / "hydra" / "claims_pretrained"
    # a gate no run can pass: the study reports it and stops before training the other losses
    failed = claims(
        "pretrained", root, tmp_path, PRETRAINED_TINY, 1, PRETRAINED_GATE="-1", **PRETRAINED_SIZES
    )
    assert "plateau gate failed" in failed and "**FAILED**" in failed
    assert not (sweeps / "methods").exists()
    gate = (root / "reports" / "claims_pretrained" / "gate.md").read_text()
    assert "at the shared start (4 CE steps)" in gate and "after 2 more CE steps (seeds 0)" in gate
    start = json.loads((sweeps / "start" / "artifacts.json").read_text())["checkpoint"]

    claims("pretrained", root, tmp_path, PRETRAINED_TINY, PRETRAINED_GATE="1", **PRETRAINED_SIZES)
    starts = set()
    for job in sweeps.glob("*/*/artifacts.json"):  # every arm starts from the one shared CE checkpoint
        checkpoint = json.loads(job.read_text())["checkpoint"]
        manifest = json.loads((root / "artifacts" / "checkpoint" / checkpoint / "manifest.json").read_text())
        starts.add(manifest["inputs"]["start"])
        assert manifest["config"]["steps"] == 2
    assert starts == {start}
    rows = list(csv.DictReader((root / "reports" / "claims_pretrained" / "report.csv").open()))
    labels = [r["label"] for r in rows]
    assert labels == [
        "loss=ce",
        "loss=entce",
        "loss=perce, loss.clip_min=0.8",
        "loss=perce, loss.clip_min=1.0",
    ]
    for row in rows[1:]:
        assert row["seeds"] == "0" and row["ci_resampled"] == "crossed: seeds x users"
        for metric in ("persona_recall", "persona_leakage", "reference_nll", "rougeL", "generated_words"):
            assert row[f"{metric}_delta"] and row[f"{metric}_ci_low"] and row[f"{metric}_ci_high"], metric
    page = (root / "reports" / "claims_pretrained" / "report.md").read_text()
    assert (
        page.startswith("# Claims study: pretrained") and "## Plateau gate" in page and "**passed**" in page
    )


@pytest.mark.slow
def test_transfer_study_evaluates_across_tasks_records_both_and_reruns_as_skips(tmp_path):
    root = tmp_path / "out"
    # one seed of the preset's two (a command-line seed replaces the sweep's): 3 tasks x 2 losses, 3 x 3 evals
    one_seed = TINY + " seed=0"
    claims("transfer", root, tmp_path, one_seed)
    evals = [json.loads((p / "manifest.json").read_text()) for p in (root / "artifacts" / "eval").iterdir()]
    pairs = {(e["tasks"]["train"], e["tasks"]["eval"]) for e in evals}
    tasks = ("persona_email", "persona_review", "persona_topic")
    assert pairs == {(a, b) for a in tasks for b in tasks}  # 3 x 3, each eval recording both tasks
    assert len(evals) == 9 * 2  # x 2 losses
    # one cross-task eval job per (checkpoint, task): the preset's own sweep does not multiply them
    assert len(list((root / "hydra" / "claims_transfer_evals").glob("*/artifacts.json"))) == 6 * 3
    for manifest in evals:  # the per-example rows the report resamples add up to the eval's metrics
        path = root / "artifacts" / "eval" / manifest["id"] / "per_example.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(rows) == 2  # 2 test users x 1 target
        for kind in ("personal", "nonpersonal"):
            accuracy = sum(r[f"{kind}_correct"] for r in rows) / sum(r[f"{kind}_total"] for r in rows)
            assert accuracy == pytest.approx(manifest["metrics"][f"{kind}_token_acc"])
        assert np.mean([r["rougeL"] for r in rows]) == pytest.approx(manifest["metrics"]["rougeL"])
    checkpoints = len(artifact_ids(root, "checkpoint"))

    rerun = claims("transfer", root, tmp_path, one_seed)
    assert not re.search(r"^(trained|estimated|built|registered) ", rerun, re.M)
    assert len(artifact_ids(root, "checkpoint")) == checkpoints
    out = root / "reports" / "claims_transfer"
    table = (out / "report.md").read_text()
    assert "## Generation" in table and "Δ personal_token_acc ↑" in table
    assert "| loss=perce, task.name=persona_review, train_task=persona_email |" in table
    assert (out / "personal_token_acc_transfer_matrix.png").stat().st_size > 1000


def row(seed, correct, total, rouge_l):
    examples = {
        f"x{i}": {"id": f"x{i}", "personal_correct": c, "personal_total": t, "rougeL": r}
        for i, (c, t, r) in enumerate(zip(correct, total, rouge_l, strict=True))
    }
    return {"options": {"seed": seed}, "examples": examples}


def test_paired_difference_is_the_seed_mean_gap_with_an_interval_around_it():
    rng = np.random.default_rng(0)
    totals = rng.integers(3, 8, size=40)
    base = [row(s, (totals * 0.5).astype(int), totals, rng.uniform(0.2, 0.4, 40)) for s in (0, 1)]
    better = [row(s, totals - 1, totals, rng.uniform(0.2, 0.4, 40)) for s in (0, 1)]
    found = stats.paired_difference(better, base, "personal_token_acc")
    expected = np.mean(
        [(totals - 1).sum() / totals.sum() - (totals * 0.5).astype(int).sum() / totals.sum() for _ in (0, 1)]
    )
    assert found["diff"] == pytest.approx(expected)
    assert 0 < found["low"] < found["diff"] < found["high"]
    assert found["pairs"] == 2 and found["n"] == 40
    # same distribution on both sides: the interval covers zero
    noise = stats.paired_difference(
        [row(0, totals * 0, totals, rng.uniform(0.2, 0.4, 40))],
        [row(0, totals * 0, totals, rng.uniform(0.2, 0.4, 40))],
        "rougeL",
    )
    assert noise["low"] < 0 < noise["high"]
    # no common seed: no pairs, no interval
    assert stats.paired_difference([row(5, totals, totals, totals * 0.0)], base, "rougeL") is None


@pytest.mark.parametrize("study", ["claims_methods", "claims_curves"])
def test_studies_take_nextquill_and_context_aware_decoding_as_arms(study):
    overrides = [f"experiment={study}", "loss=nextquill", "eval.decoding=cad"]
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    validate_config(cfg)
    assert cfg.loss.weighting == "target" and cfg.eval.decoding == "cad"
