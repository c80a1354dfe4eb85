"""W&B runs people can use (issue 20): metrics of reused stages read from the manifests, run names from the
swept settings, keys without spaces, a readable summary left by an offline run."""

import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from percontrast_cli.cli.tracking import SUMMARY_FILE, WandbTracker, clean_key, swept_keys
from percontrast_cli.store.artifacts import ArtifactStore
from percontrast_cli.store.identity import Identity

pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach W&B's servers fails at once (offline runs must not try)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")


def test_keys_lose_their_spaces():
    assert clean_key("train perce-rounds/loss") == "train_perce-rounds/loss"
    assert clean_key(" eval/rougeL ") == "eval/rougeL"


def test_swept_keys_are_the_ones_with_several_values():
    argv = ["-m", "loss=ce,perce", "experiment=miniature", "seed=range(2)", "+extra=a,b", "train.lr=1e-3"]
    assert swept_keys(argv) == {"loss", "seed", "extra"}
    assert swept_keys(["experiment=miniature"]) == set()


def publish(store, kind, config, manifest_extra, files=None):
    artifact_id = Identity(kind, config, {}).id
    with store.create(kind, artifact_id, config, {}, **manifest_extra) as (tmp, _):
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
    return store.find(kind, artifact_id)


def test_reused_artifacts_log_their_metrics_and_the_offline_run_leaves_a_summary(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    history = [
        {"loss": 5.1, "personal_loss": 5.3, "step": 2, "epoch": 0.5},
        {"loss": 4.9, "personal_loss": 5.0, "step": 4, "epoch": 1.0},
        {"train_runtime": 1.5, "train_loss": 5.0, "step": 4, "epoch": 1.0},
    ]
    warmup = publish(
        store, "checkpoint", {"n": 0}, {"tag": "warmup"}, {"log_history.json": json.dumps(history)}
    )
    trained = publish(
        store, "checkpoint", {"n": 1}, {"tag": "perce rounds"}, {"log_history.json": json.dumps(history)}
    )
    estimate = publish(store, "estimate", {"n": 2}, {"metrics": {"estimator_auroc": 0.71}})
    evaluation = publish(store, "eval", {"n": 3}, {"metrics": {"rougeL": 0.25, "personal_token_acc": 0.5}})

    cfg = OmegaConf.create({"loss": {"name": "perce"}, "task": {"name": "persona_email"}, "seed": 0})
    tracker_cfg = OmegaConf.create({"project": "percontrast", "group": None, "mode": "offline"})
    tracker = WandbTracker(cfg, tracker_cfg, str(tmp_path / "job"))
    assert tracker.name == "loss=perce task=persona_email"  # no Hydra job: the loss and the task
    # the warm-up trained live in this job (one logged step), the main training was reused
    tracker.log({"train warmup/loss": 5.2, "train warmup/step": 2})
    tracker.record_artifacts([warmup, estimate, trained, evaluation])
    tracker.finish()

    (run_dir,) = (tmp_path / "job" / "wandb").glob("offline-run-*")
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    assert summary["name"] == "loss=perce task=persona_email" and summary["mode"] == "offline"
    assert summary["sync"] == f"wandb sync {run_dir}"
    metrics = summary["metrics"]
    assert metrics["eval/rougeL"] == 0.25 and metrics["eval/personal_token_acc"] == 0.5
    assert metrics["estimate/estimator_auroc"] == 0.71
    assert metrics["artifacts/checkpoint_perce_rounds"] == trained.id
    assert metrics["artifacts/eval"] == evaluation.id
    # the reused training's curve, from its manifest; the live one was not logged twice
    assert metrics["train_perce_rounds/loss"] == 4.9 and metrics["train_perce_rounds/step"] == 4
    assert metrics["train_warmup/loss"] == 5.2
    assert not any(" " in key for key in metrics)

    log = next(run_dir.glob("*.wandb")).read_bytes()
    for key in (b"eval/rougeL", b"train_perce_rounds/personal_loss", b"estimate/estimator_auroc"):
        assert key in log, key
    assert b"train perce" not in log


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
    return result


@pytest.mark.slow
def test_wandb_added_to_a_finished_sweep_logs_every_jobs_metrics_under_its_swept_settings(tmp_path):
    root = tmp_path / "out"
    sweep = ["run", "-m", "loss=ce,perce", "experiment=miniature"]
    cli(*sweep, f"hydra.sweep.dir={tmp_path / 'first'}", root=root, cwd=tmp_path)
    again = cli(
        *sweep,
        "tracker=wandb",
        "tracker.mode=offline",
        f"hydra.sweep.dir={tmp_path / 'second'}",
        root=root,
        cwd=tmp_path,
    )
    assert "trained" not in again.stderr and "estimated" not in again.stderr  # every stage reused
    for job, loss in (("0", "ce"), ("1", "perce")):
        (run_dir,) = (tmp_path / "second" / job / "wandb").glob("offline-run-*")
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
        assert summary["name"] == f"loss={loss}"  # the swept setting, not the fixed experiment=miniature
        assert summary["group"] == f"sweep-{tmp_path.name}-second"  # the sweep dir's last two parts
        metrics = summary["metrics"]
        for key in ("eval/rougeL", "eval/personal_token_acc", "eval/estimator_auroc"):
            assert isinstance(metrics[key], float), key
        assert metrics[f"train_{loss}/loss"] > 0 and metrics["train_warmup/loss"] > 0
        assert not any(" " in key for key in metrics)
        assert f"wandb run 'loss={loss}'" in again.stderr
