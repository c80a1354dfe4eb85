"""Learning curves (eval.at_steps): checkpoints saved along one training run and evaluated, ids shared with
shorter runs only where the learning-rate schedule allows, and `report`'s step column and curve plots."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from percontrast_cli.method.schedule import why_not_prefix

from .test_cli import cli as failing_cli
from .test_end_to_end import artifact_ids, cli

MINIATURE = ("experiment=miniature", "loss=ce")


def manifest(root, kind, artifact_id) -> dict:
    return json.loads((root / "artifacts" / kind / artifact_id / "manifest.json").read_text())


def weights(root, checkpoint_id) -> dict:
    return load_file(str(root / "artifacts" / "checkpoint" / checkpoint_id / "model" / "model.safetensors"))


@pytest.mark.parametrize(
    ("scheduler", "warmup", "step", "total", "shared"),
    [
        ("constant", 5, 2, 6, True),
        ("constant_with_warmup", 1, 20, 60, True),  # the warm-up, 1 step, is under a tenth of either run
        ("constant_with_warmup", 30, 20, 60, False),  # capped at 2 steps for 20, 6 for 60
        ("cosine", 0, 2, 6, False),
        ("linear", 0, 2, 6, False),
        ("linear", 0, 6, 6, True),  # the end is the run itself
    ],
)
def test_a_point_is_a_shorter_run_only_when_the_schedule_ignores_the_length(
    scheduler, warmup, step, total, shared
):
    train = OmegaConf.create({"scheduler": scheduler, "lr_warmup_steps": warmup})
    reason = why_not_prefix(train, step, total)
    assert (reason is None) == shared, reason
    if not shared:
        assert "length" in reason  # one line saying why
    assert why_not_prefix(OmegaConf.create({"scheduler": "constant"}), 2, 6, rounds=True) is not None


@pytest.mark.slow
def test_curve_points_are_trained_once_evaluated_and_reported_by_step(tmp_path):
    root = tmp_path / "out"
    sweep = tmp_path / "sweep"
    acceptance = ("experiment=miniature", "train.steps=6", "loss=ce,perce", "seed=0,1", "eval.at_steps=[2,4]")
    args = ("run", "-m", *acceptance, f"hydra.sweep.dir={sweep}")
    out = cli(*args, root=root, cwd=tmp_path)
    assert "the points are this 6-step run's" in out  # cosine: why a longer run cannot reuse them
    jobs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/artifacts.json"))]
    assert len(jobs) == 4
    for job in jobs:
        curve = {int(step): eval_id for step, eval_id in job["curve"].items()}
        assert sorted(curve) == [2, 4, 6] and curve[6] == job["eval"]  # 3 points per job, the end is `eval`
        assert len(set(curve.values())) == 3
        progress = []
        for step, eval_id in sorted(curve.items()):
            checkpoint = manifest(root, "checkpoint", manifest(root, "eval", eval_id)["inputs"]["checkpoint"])
            assert checkpoint["config"]["steps"] == step
            assert checkpoint["progress"]["step"] == step
            progress.append(checkpoint["progress"])
        assert 0 < progress[0]["train_tokens"] < progress[1]["train_tokens"] < progress[2]["train_tokens"]
        assert 0 < progress[0]["train_seconds"] < progress[1]["train_seconds"] < progress[2]["train_seconds"]
        assert curve[6] == job["eval"] and job["checkpoint"] != job["start"]
    # the points of one run are its own (cosine), the same step of the two losses' runs are different models
    point_checkpoints = {manifest(root, "eval", j["curve"]["2"])["inputs"]["checkpoint"] for j in jobs}
    assert len(point_checkpoints) == 4

    rerun = cli(*args, root=root, cwd=tmp_path)
    assert not re.search(r"\b(trained|saved|evaluated|built)\b", rerun), rerun[-2000:]

    report_dir = tmp_path / "report"
    cli("report", f"report.evals=[{sweep}]", f"report.out_dir={report_dir}", root=root, cwd=tmp_path)
    with open(report_dir / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["loss"], int(r["step"])) for r in rows) == [
        (loss, step) for loss in ("ce", "perce") for step in (2, 4, 6)
    ]
    assert all(r["seeds"] == "0,1" for r in rows)
    assert all(float(r["train_tokens_mean"]) > 0 and float(r["train_seconds_mean"]) > 0 for r in rows)
    for row in rows:  # each PerCE point is paired with CE at the same step
        assert (row["persona_recall_delta"] != "") == (row["loss"] == "perce")
    # each PerCE point against the CE points around its measured seconds (PerCE's steps cost more)
    assert "## Compute-matched" in (report_dir / "report.md").read_text()
    plots = sorted(p.name for p in report_dir.glob("learning_curves_vs_*.png"))
    assert plots == [
        "learning_curves_vs_seconds.png",
        "learning_curves_vs_step.png",
        "learning_curves_vs_tokens.png",
    ]


@pytest.mark.slow
def test_step_zero_is_the_start_and_a_constant_schedule_shares_its_points(tmp_path):
    root = tmp_path / "out"
    constant = (*MINIATURE, "train.scheduler=constant")
    out = cli("run", *constant, "train.steps=4", "eval.at_steps=[0,2]", root=root, cwd=tmp_path)
    assert "the points are this" not in out  # nothing to explain: the points are shorter runs' checkpoints
    job = json.loads(next((root / "hydra").glob("*/*/artifacts.json")).read_text())
    curve = job["curve"]
    assert sorted(map(int, curve)) == [0, 2, 4]
    assert manifest(root, "eval", curve["0"])["inputs"]["checkpoint"] == job["start"]
    point = manifest(root, "eval", curve["2"])["inputs"]["checkpoint"]

    # a 2-step run with the same settings is that point: found, not trained
    shorter = cli("train", *constant, "train.steps=2", root=root, cwd=tmp_path)
    assert f"skip checkpoint {point} exists" in shorter and "trained" not in shorter
    # and the id does not lie: trained on its own, in another store, the 2-step run has the same weights
    other = tmp_path / "other"
    cli("train", *constant, "train.steps=2", root=other, cwd=tmp_path)
    assert point in artifact_ids(other, "checkpoint")
    mine, theirs = weights(root, point), weights(other, point)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.slow
def test_points_added_later_train_again_only_up_to_the_last_one(tmp_path):
    root = tmp_path / "out"
    cli("run", *MINIATURE, "train.steps=6", root=root, cwd=tmp_path)
    before = set(artifact_ids(root, "checkpoint"))
    out = cli("run", *MINIATURE, "train.steps=6", "eval.at_steps=[3]", root=root, cwd=tmp_path)
    assert "training again up to step 3" in out
    assert out.count("the points are this 6-step run's") == 1  # cosine: said once, not by run's plan too
    assert "step 4/6" not in out  # stopped after the missing point
    (new,) = set(artifact_ids(root, "checkpoint")) - before
    assert manifest(root, "checkpoint", new)["progress"]["step"] == 3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[7]", "step 7 is past the training's end (6"),
        ("[-1]", "eval.at_steps[0]=-1"),
        ("3", "must be a list"),
    ],
)
def test_bad_at_steps_is_one_line(tmp_path, value, message):
    command = ["run", *MINIATURE, "train.steps=6", f"eval.at_steps={value}"]
    result = failing_cli(*command, cwd=tmp_path, env={**os.environ, "PERCONTRAST_OUTPUTS": str(tmp_path)})
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_curves_preset_is_smollm2_from_the_base_with_three_seeds_and_30_test_users():
    from hydra import compose, initialize_config_module

    from percontrast_cli.cli.validation import validate_config

    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=claims_curves"], return_hydra_config=True)
    validate_config(cfg)
    assert cfg.model.name == "smollm2" and cfg.train.peft == "none" and cfg.checkpoint is None
    assert cfg.task.n_test_users >= 30
    assert len(cfg.hydra.sweeper.params.seed.split(",")) >= 3 and cfg.hydra.sweeper.params.loss == "ce,perce"
    targets = cfg.task.n_train_users * cfg.task.examples_per_user
    epoch = -(-targets // cfg.train.batch_size)
    assert cfg.train.steps == 3 * epoch  # the paper's 3 epochs
    assert 0 in cfg.eval.at_steps and epoch in cfg.eval.at_steps


@pytest.mark.slow
def test_claims_curves_gpu_dry_runs_both_arms_and_reports_curves(tmp_path):
    root = tmp_path / "out"
    env = {
        **os.environ,
        "PERCONTRAST_OUTPUTS": str(root),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    script = Path(__file__).parents[1] / "scripts" / "claims.sh"
    result = subprocess.run(
        ["bash", str(script), "curves", "--gpu", "--dry"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for arm, points in (("claims_curves_gpu_dry", [0, 2, 4]), ("claims_curves_gpu_dry_lora", [0, 2, 4])):
        report = root / "reports" / arm
        with open(report / "report.csv") as f:
            rows = list(csv.DictReader(f))
        assert sorted({int(r["step"]) for r in rows}) == points, arm
        assert {r["loss"] for r in rows} == {"ce", "perce"}
        assert (report / "learning_curves_vs_step.png").is_file()
        page = (report / "report.md").read_text()
        assert "Primary metric: persona_recall_slot" in page and "TOST rougeL, loss=perce" in page
    for arm in ("full", "lora"):  # each arm's ends, decoded again by sampling (the paper's temperature)
        with open(root / "reports" / f"claims_curves_gpu_dry_{arm}_sampled" / "report.csv") as f:
            rows = list(csv.DictReader(f))
        assert sorted(r["loss"] for r in rows) == ["ce", "perce"] and "step" not in rows[0]
        sampled = root / "hydra" / "claims_curves_gpu_dry" / f"{arm}_sampled"
        jobs = sorted(sampled.glob("*/artifacts.json"))
        assert len(jobs) == 2, jobs  # the CE and the PerCE end of seed 0
        for job_file in jobs:
            decoding = manifest(root, "eval", json.loads(job_file.read_text())["eval"])["decoding"]
            assert decoding["temperature"] == 0.4, decoding
    job = json.loads(
        next((root / "hydra" / "claims_curves_gpu_dry" / "lora").glob("*/*/artifacts.json")).read_text()
    )
    assert (
        root / "artifacts" / "checkpoint" / job["checkpoint"] / "adapter"
    ).is_dir()  # the LoRA arm is LoRA


def test_compute_matched_meets_the_ce_points_around_each_point_s_measured_seconds():
    from percontrast_cli.reporting import compute_matched, report

    from .test_report_stats import eval_row

    users = [f"u{i // 2}" for i in range(20)]
    base = np.linspace(0.2, 0.4, 20)
    ce_seconds = {0: 0.0, 3: 30.0, 8: 80.0, 24: 240.0}
    perce_seconds = {3: 45.0, 8: 120.0, 24: 360.0}

    def point(seed, loss, step, seconds, scores, lr=5e-5):
        row = eval_row(seed, loss, scores, users)
        row["options"].update({"step": step, "train.lr": lr})
        row["metrics"]["train_seconds"] = seconds + seed  # each seed its own measured time
        return row

    rows = []
    for seed in (0, 1):
        rows += [point(seed, "ce", step, s, base + step / 100) for step, s in ce_seconds.items()]
        rows += [point(seed, "perce", step, s, base + step / 50) for step, s in perce_seconds.items()]
        rows.append(point(seed, "ce", 8, 50.0, base, lr=5e-4))  # another run setting: never met
    summary = report.summarize(rows, ["loss", "step", "train.lr"])
    found = compute_matched.compute_matched(summary, ["rougeL"])
    met = sorted((c["point"]["options"]["step"], c["ce"]["options"]["step"], c["ce_has"]) for c in found)
    # 45 s lies between CE's 30 s (step 3) and 80 s (step 8); 360 s is past CE's last point: one side
    assert met == [(3, 3, "fewer"), (3, 8, "more"), (8, 8, "fewer"), (8, 24, "more"), (24, 24, "fewer")]
    assert all(c["ce"]["options"]["train.lr"] == 5e-5 for c in found)
    by_pair = {
        (c["point"]["options"]["step"], c["ce"]["options"]["step"]): c["paired"]["rougeL"] for c in found
    }
    # the paired Δ between two different steps is the plain mean difference of their scores
    assert by_pair[(8, 24)]["diff"] == pytest.approx(8 / 50 - 24 / 100)
    assert by_pair[(8, 24)]["high"] < 0 and by_pair[(3, 3)]["low"] > 0
    section = "\n".join(compute_matched.compute_matched_section(summary, ["rougeL"]))
    assert "| loss=perce, step=8, train.lr=5e-05 | 120 | step 24 | 240 | more seconds |" in section
    assert "crossed bootstrap: seeds x users" in section
    assert (
        compute_matched.compute_matched_section(report.summarize(rows[:4], ["loss", "step"]), ["rougeL"])
        == []
    )


def test_step_zero_is_one_model_under_every_loss_not_a_comparison():
    from percontrast_cli.reporting import curves, report, verdicts

    from .test_report_stats import eval_row

    users = [f"u{i // 2}" for i in range(20)]
    base = np.linspace(0.2, 0.4, 20)
    rows = []
    for seed in (0, 1):
        start = eval_row(seed, "ce", base, users)
        start["id"] = f"start{seed}"
        for loss in ("ce", "perce"):  # the shared start: the same eval under both losses' labels
            rows.append({**start, "options": {"seed": seed, "loss": loss, "step": 0}})
            for step in (3, 24):
                row = eval_row(seed, loss, base + step / (100 if loss == "ce" else 50), users)
                row.update(id=f"{loss}{seed}-{step}", options={**row["options"], "step": step})
                rows.append(row)
    summary = report.summarize(rows, ["loss", "step"])
    assert [e["label"] for e in summary][:3] == ["loss=ce, step=0", "loss=ce, step=3", "loss=ce, step=24"]
    by_label = {e["label"]: e for e in summary}
    assert "paired" not in by_label["loss=perce, step=0"]  # no Δ of a model with itself
    assert by_label["loss=perce, step=3"]["paired"]["rougeL"]["low"] > 0
    ce_start = by_label["loss=ce, step=0"]["values"]["rougeL"][0]
    assert curves.band_at(by_label["loss=perce, step=0"], summary, "rougeL") == (ce_start, ce_start)
    found = verdicts.intervals(summary)
    assert len(found) == 2 * len(by_label["loss=perce, step=3"]["paired"])  # steps 3 and 24 only


def test_a_metric_that_is_zero_in_every_eval_is_named():
    from percontrast_cli.reporting import report, verdicts

    from .test_report_stats import eval_row

    rows = []
    for seed, loss in ((0, "ce"), (0, "perce")):
        row = eval_row(seed, loss, [0.2, 0.6])
        row["id"] = loss
        row["metrics"]["persona_slot_sentence_rate"] = 0.0  # the other metric, rougeL, differs
        for example in row["examples"].values():  # the persona rows an eval writes: no slot sentence
            example.update(persona_over_inserted=[], persona_absent=[], persona_leaked=[])
            example.update(persona_slot_written={}, persona_slot_correct={})
        rows.append(row)
    lines = verdicts.zero_lines(report.summarize(rows, ["loss"]))
    assert len(lines) == 1 and lines[0].startswith(
        "persona_slot_sentence_rate is 0 in every one of the 2 evals"
    )
    assert "persona_slot_accuracy) is undefined" in lines[0]
    assert verdicts.zero_lines(report.summarize(rows[:1], ["loss"])) == []  # one eval: nothing to tell apart
