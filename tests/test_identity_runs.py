"""The identity rules along the user's path: reruns with an eval-time setting changed retrain nothing, and
consumers run on their inputs' recorded settings (eval checkpoint=latest, inspect estimate=latest)."""

import json
import os
import subprocess
import sys

import pytest


def percontrast(tmp_path, *args):
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(tmp_path / "outputs")}
    result = subprocess.run(
        [sys.executable, "-m", "percontrast_cli.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def eval_metrics(tmp_path, log: str) -> dict:
    eval_id = [
        line.split()[2] for line in log.splitlines() if line.startswith(("evaluated eval", "skip eval"))
    ][-1]
    return json.loads((tmp_path / "outputs" / "artifacts" / "eval" / eval_id / "metrics.json").read_text())


@pytest.mark.slow
def test_another_tau_retrains_and_reestimates_nothing_and_reports_f1_at_the_new_tau(tmp_path):
    common = ("run", "experiment=miniature", "estimator.refresh=rounds")
    first = percontrast(tmp_path, *common, "estimator.tau=-100")
    assert "estimated estimate" in first or "built estimate" in first
    second = percontrast(tmp_path, *common, "estimator.tau=0.9")
    built = [line for line in second.splitlines() if line.startswith(("trained ", "built ", "estimated "))]
    assert built == []  # every model, checkpoint and estimate reused
    assert "skip estimate" in second and "skip checkpoint" in second
    # everything is a personal token at tau=-100 (F1 = 2p/(1+p) > 0), nothing at 0.9 on this untrained model
    assert eval_metrics(tmp_path, first)["estimator_f1"] != eval_metrics(tmp_path, second)["estimator_f1"]


@pytest.mark.slow
def test_consumers_take_their_inputs_settings_after_a_miniature_sweep(tmp_path):
    percontrast(tmp_path, "run", "-m", "experiment=miniature", "seed=0,1")
    log = percontrast(tmp_path, "eval", "checkpoint=latest")
    evaluated = json.loads(
        next((tmp_path / "outputs" / "artifacts" / "eval").glob("*/manifest.json")).read_text()
    )
    assert evaluated["run_config"]["task"]["n_test_users"] == 2  # the miniature task, not the default's 100
    assert "evaluated eval" in log or "skip eval" in log
    inspected = percontrast(tmp_path, "inspect", "estimate=latest", "example=3")
    assert "HTML heatmap" in inspected


@pytest.mark.slow
def test_an_override_that_cannot_fit_the_checkpoint_is_one_line(tmp_path):
    percontrast(tmp_path, "run", "experiment=miniature")
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(tmp_path / "outputs")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "percontrast_cli.cli",
            "eval",
            "checkpoint=latest",
            "model.max_length=64",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "model.max_length=64" in result.stderr and "(256)" in result.stderr
    assert "Traceback" not in result.stderr
