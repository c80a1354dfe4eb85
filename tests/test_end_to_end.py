"""The recipe on CPU with tiny limits, through the real CLI: run, rerun (all skipped), eval, a sweep."""

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def cli(*args, root, cwd):
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(root)}
    result = subprocess.run(
        [sys.executable, "-m", "percontrast_cli.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def artifact_ids(root, kind):
    return sorted(p.name for p in (root / "artifacts" / kind).iterdir() if not p.name.startswith("."))


def test_run_rerun_eval_and_sweep(tmp_path):
    root = tmp_path / "out"
    out = cli("run", "experiment=miniature", root=root, cwd=tmp_path)
    for kind in ("model", "checkpoint", "eval"):
        assert artifact_ids(root, kind), kind
    assert not (root / "artifacts" / "estimate").exists()  # online PerCE reads no estimate: none is computed
    (eval_id,) = artifact_ids(root, "eval")
    metrics = json.loads((root / "artifacts" / "eval" / eval_id / "metrics.json").read_text())
    for key in ("rouge1", "rougeL", "personal_token_acc", "nonpersonal_token_acc", "estimator_auroc"):
        assert 0.0 <= metrics[key] <= 1.0
    predictions = (root / "artifacts" / "eval" / eval_id / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 4  # 2 test users x 2 examples
    assert "personal_token_acc" in out and eval_id in out

    rerun = cli("run", "experiment=miniature", root=root, cwd=tmp_path)
    assert re.findall(r"skip (\w+) ", rerun) == ["model", "checkpoint", "checkpoint", "eval"]
    assert "trained" not in rerun and "estimated" not in rerun

    perce_checkpoint = json.loads((root / "artifacts" / "eval" / eval_id / "manifest.json").read_text())[
        "inputs"
    ]["checkpoint"]
    again = cli(
        "eval",
        f"checkpoint={perce_checkpoint}",
        "experiment=miniature",
        "eval.limit=2",
        root=root,
        cwd=tmp_path,
    )
    assert len(artifact_ids(root, "eval")) == 2 and "estimator_auroc" in again

    sweep = cli("run", "-m", "experiment=miniature", "loss=ce,perce", root=root, cwd=tmp_path)
    assert "#1 : experiment=miniature loss=perce" in sweep
    assert len(artifact_ids(root, "eval")) == 3  # ce is new; perce was already evaluated


def test_rounds_bootstrap_and_mismatched_estimate(tmp_path):
    root = tmp_path / "out"
    out = cli(
        "train",
        "experiment=miniature",
        "estimator.refresh=rounds",
        "estimator.rounds=2",
        root=root,
        cwd=tmp_path,
    )
    # warm-up, then one training run whose weights are re-estimated after half its steps
    estimates = [
        json.loads((root / "artifacts" / "estimate" / i / "manifest.json").read_text())
        for i in artifact_ids(root, "estimate")
    ]
    assert sorted(e["config"].get("after_step", 0) for e in estimates) == [0, 2]
    tags = sorted(
        json.loads((root / "artifacts" / "checkpoint" / i / "manifest.json").read_text())["tag"]
        for i in artifact_ids(root, "checkpoint")
    )
    assert tags == ["perce-rounds", "warmup"]
    assert "after step 2" in out
    trained = next(
        i
        for i in artifact_ids(root, "checkpoint")
        if "rounds"
        in json.loads((root / "artifacts" / "checkpoint" / i / "manifest.json").read_text())["tag"]
    )
    history = json.loads((root / "artifacts" / "checkpoint" / trained / "log_history.json").read_text())
    assert max(h["step"] for h in history) == 4  # one run of train.steps, not two runs of half

    estimate_id = artifact_ids(root, "estimate")[0]
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(root)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "percontrast_cli.cli",
            "train",
            "experiment=miniature",
            "estimator.refresh=rounds",
            f"estimate={estimate_id}",
            "task.seed=5",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2
    assert f"estimate artifact {estimate_id}" in result.stderr and "training data" in result.stderr
    assert len(artifact_ids(root, "model")) == 1  # rejected before building anything for the new data

    # the same data under another counterfactual profile or prompt: the scores would weight another method
    for override, recorded in (("estimator.counterfactual=empty", "'drop'"), ("retrieval.k=1", "5")):
        other = subprocess.run(
            [sys.executable, "-m", "percontrast_cli.cli", "train", "experiment=miniature",
             "estimator.refresh=rounds", f"estimate={estimate_id}", override],
            capture_output=True, text=True, cwd=tmp_path, env=env,
        )  # fmt: skip
        key = override.split("=")[0]
        assert other.returncode == 2, other.stderr[-2000:]
        assert f"but estimate {estimate_id} was scored with {key}={recorded}" in other.stderr, other.stderr
    checkpoints = len(artifact_ids(root, "checkpoint"))
    cli("train", "experiment=miniature", "estimator.refresh=rounds", f"estimate={estimate_id}", root=root,
        cwd=tmp_path)  # fmt: skip
    assert len(artifact_ids(root, "checkpoint")) == checkpoints + 1  # the matching settings train


def test_baselines_train_and_evaluate(tmp_path):
    """LossCE (with its reference artifact), EntCE and DFT through the CLI, each logging its weights."""
    root = tmp_path / "out"
    cli("run", "-m", "experiment=miniature", "loss=lossce,entce,dft", root=root, cwd=tmp_path)
    (reference_id,) = artifact_ids(root, "reference")  # scored once, from the warm-up checkpoint
    reference = json.loads((root / "artifacts" / "reference" / reference_id / "manifest.json").read_text())
    losses = {}
    for i in artifact_ids(root, "checkpoint"):
        manifest = json.loads((root / "artifacts" / "checkpoint" / i / "manifest.json").read_text())
        losses[manifest["config"]["loss"]["name"]] = manifest
    assert sorted(losses) == ["ce", "dft", "entce", "lossce"]  # ce: the shared warm-up
    assert losses["lossce"]["inputs"]["reference"] == reference_id
    assert reference["inputs"]["checkpoint"] == losses["lossce"]["inputs"]["start"]
    for name in ("lossce", "entce", "dft"):
        history = json.loads(
            (root / "artifacts" / "checkpoint" / losses[name]["id"] / "log_history.json").read_text()
        )
        logged = [h for h in history if "weight_mean" in h]
        assert logged and all(0.0 <= h["weight_at_min"] <= 1.0 for h in logged), name
    assert len(artifact_ids(root, "eval")) == 3


def test_two_identical_runs_at_once_build_each_artifact_once(tmp_path):
    """A parallel sweep's race: both processes need the same artifacts in one outputs directory."""
    root = tmp_path / "out"
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(root)}
    # refresh=rounds: the run computes an estimate too, so every kind of artifact is raced for
    command = [
        sys.executable,
        "-m",
        "percontrast_cli.cli",
        "run",
        "experiment=miniature",
        "estimator.refresh=rounds",
    ]
    procs = [
        subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate()[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    for kind, count in (("model", 1), ("checkpoint", 2), ("estimate", 1), ("eval", 1)):
        ids = artifact_ids(root, kind)
        assert len(ids) == count, (kind, ids)
        for artifact_id in ids:  # complete: a manifest whose payload list matches the files
            manifest = json.loads((root / "artifacts" / kind / artifact_id / "manifest.json").read_text())
            assert all((root / "artifacts" / kind / artifact_id / f).is_file() for f in manifest["payload"])
    assert not list((root / "artifacts").glob("*/.tmp-*"))
    joined = "\n".join(outputs)
    assert "skip eval" in joined or "waiting for" in joined  # the second one reused what the first built
    assert sum(out.count("trained checkpoint") for out in outputs) == 2  # warm-up + main, each trained once
