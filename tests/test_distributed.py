"""Scale-out on accelerate: every distributed option gives a valid accelerate config; 2-process CPU (gloo)
runs compute what one process computes (steps, examples per epoch, every logged statistic, the weights, the
scores), keep the job record and log, run FSDP, and end as one clear error when a rank fails."""

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from safetensors.numpy import load_file
from safetensors.torch import load_file as load_weights

from percontrast_cli.cli.validation import validate_config
from percontrast_cli.cli.worker import accelerate_config, launch_plan

OPTIONS = ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"]
# Launched processes rendezvous on distributed.main_process_port (29500): under pytest-xdist (make test) these
# tests and the GPU check's dry run share one worker, so no two launches meet on the port at once.
pytestmark = pytest.mark.xdist_group("main_process_port")


@pytest.mark.parametrize("option", OPTIONS)
def test_each_option_composes_validates_and_loads_in_accelerate(option, tmp_path):
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"distributed={option}", "distributed.num_processes=4"])
    validate_config(cfg)
    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(accelerate_config(cfg)))
    loaded = load_config_from_file(str(path))
    assert loaded.num_processes == 4 and loaded.num_machines == 1
    expected = {"ddp": "MULTI_GPU", "fsdp": "FSDP"}.get(option, "DEEPSPEED")
    assert str(loaded.distributed_type).endswith(expected)
    if option.startswith("deepspeed"):
        assert loaded.deepspeed_config["zero_stage"] == int(option[-1])
    if option == "deepspeed_zero3":  # else accelerate cannot gather the weights for a complete checkpoint
        assert loaded.deepspeed_config["zero3_save_16bit_model"] is True


def test_two_nodes_of_eight_gpus_get_one_launch_each(tmp_path, monkeypatch):
    """nodes=2, num_processes=16: Slurm asks each node for 8 GPUs, and each node's task writes its own
    accelerate config (its machine rank) in the shared job dir and launches 8 workers of the 16."""
    import yaml

    common = ["distributed=ddp", "distributed.num_processes=16", "distributed.num_machines=2"]
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        slurm = compose("config", overrides=[*common, "hydra/launcher=slurm"], return_hydra_config=True)
        nodes = [
            compose("config", overrides=[*common, f"distributed.machine_rank={rank}"]) for rank in (0, 1)
        ]
    assert slurm.hydra.launcher.nodes == 2 and slurm.hydra.launcher.gpus_per_node == 8
    assert slurm.hydra.launcher.tasks_per_node == 1
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)  # not under Slurm: the address must be given
    with pytest.raises(Exception, match="main_process_ip"):
        launch_plan("run", nodes[0], tmp_path)
    plans = []
    for cfg in nodes:
        cfg.distributed.main_process_ip = "10.0.0.1"
        plans.append(launch_plan("run", cfg, tmp_path))
    files = [set(plan.files) for plan in plans]
    assert not files[0] & files[1]  # no file written by both nodes
    for rank, plan in enumerate(plans):
        (accelerate_file,) = [p for p in plan.files if p.name.startswith("accelerate_config")]
        assert accelerate_file.name == f"accelerate_config.machine{rank}.yaml"
        config = yaml.safe_load(plan.files[accelerate_file])
        assert config["machine_rank"] == rank and config["num_machines"] == 2
        assert config["num_processes"] == 16  # in all: accelerate starts 16 / 2 on each machine
        assert config["main_process_ip"] == "10.0.0.1"
        assert plan.command[-3:] == [
            str(accelerate_file),
            "run",
            str(tmp_path / f"resolved_config.machine{rank}.yaml"),
        ]
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        uneven = compose(
            "config",
            overrides=["distributed=ddp", "distributed.num_processes=9", "distributed.num_machines=2"],
        )
    with pytest.raises(Exception, match="multiple of distributed.num_machines"):
        accelerate_config(uneven)


def test_report_and_inspect_run_in_the_parent_alone(monkeypatch, tmp_path):
    from percontrast_cli.cli import stages, worker

    calls = []
    monkeypatch.setitem(stages.STAGES, "report", lambda cfg: calls.append(cfg) or "done")
    monkeypatch.setattr(worker.subprocess, "run", lambda *a, **k: pytest.fail("launched workers for report"))
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=["distributed=ddp"])
    assert worker.launch("report", cfg, tmp_path) == "done" and len(calls) == 1


def run(root, *args, returncode=0, timeout=600, env=None):
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(root), **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "percontrast_cli.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=root.parent,
        timeout=timeout,
    )
    assert result.returncode == returncode, result.stderr[-3000:]
    return result


def published(root, kind):
    return sorted(p.name for p in (root / "artifacts" / kind).iterdir() if not p.name.startswith("."))


# 10 examples: one process at batch 4 has batches of 4, 4 and 2 per epoch; two processes at batch 2 split each
# of them, and the second process has no example of the last one (a filler row keeps it in step).
SAME_RUN = [
    "experiment=miniature",
    "eval.meteor=false",
    "data.limit=10",
    "train.epochs=2",
    "train.log_every=1",
]
TWO = ["distributed.num_processes=2", "train.batch_size=2"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    root = tmp_path_factory.mktemp("one") / "out"
    run(root, "run", "-m", *SAME_RUN, "train.batch_size=4", f"hydra.sweep.dir={root}/sweep")
    return root


def logged(root, checkpoint):
    history = json.loads((root / "artifacts" / "checkpoint" / checkpoint / "log_history.json").read_text())
    return [h for h in history if "loss" in h]


# Measured time (logged with the tokens seen, for learning curves): never equal between two runs. The tokens
# seen also count the 2-token fillers that even out a batch over processes, so they differ by a few tokens.
WALL_CLOCK = {"train_runtime", "train_tokens_per_second", "num_input_tokens_seen"}


def assert_same_training(one, two):
    assert published(one, "checkpoint") == published(two, "checkpoint")  # same ids: same global batch
    for checkpoint in published(one, "checkpoint"):
        logs = [logged(root, checkpoint) for root in (one, two)]
        assert len(logs[0]) == len(logs[1])
        for a, b in zip(*logs, strict=True):
            assert set(a) == set(b)
            for key in (
                set(a) - WALL_CLOCK
            ):  # loss, personal/nonpersonal loss, weights, examples, lr, grad norm
                assert b[key] == pytest.approx(a[key], abs=1e-5, rel=1e-5), (checkpoint, a["step"], key)
        files = [
            root / "artifacts" / "checkpoint" / checkpoint / "model" / "model.safetensors"
            for root in (one, two)
        ]
        weights = [load_weights(str(f)) for f in files]
        assert set(weights[0]) == set(weights[1])
        for name, value in weights[0].items():
            torch.testing.assert_close(weights[1][name], value, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_two_gloo_processes_run_what_one_process_runs(one_process, tmp_path):
    two = tmp_path / "two"
    result = run(two, "run", "-m", *SAME_RUN, "distributed=ddp", *TWO, f"hydra.sweep.dir={two}/sweep")
    out = result.stdout + result.stderr
    assert_same_training(one_process, two)
    checkpoint = json.loads((two / "sweep" / "0" / "artifacts.json").read_text())["checkpoint"]
    per_step = [h["examples"] for h in logged(two, checkpoint)]
    assert per_step == [4, 4, 2, 4, 4, 2]  # train.epochs=2 means 2 epochs of 10 examples, in 6 steps
    assert not list((two / "artifacts").glob("*/.tmp-*"))  # written once, by rank 0
    assert out.count("trained checkpoint") == 2  # one line per artifact, not one per rank
    # The job record (read above) and the job log, as with one process; `report` finds the sweep's eval.
    (log,) = (two / "sweep" / "0").glob("*.log")
    assert "train perce: step 6/6" in log.read_text() and "2 processes (MULTI_CPU)" in log.read_text()
    run(two, "report", f"report.evals=[{two}/sweep]", f"report.out_dir={tmp_path}/report")
    rows = list(csv.DictReader(open(tmp_path / "report" / "report.csv")))
    assert len(rows) == 1


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_trains_what_one_process_trains(one_process, tmp_path):
    """accelerate runs FSDP only on accelerators; the worker routes a CPU launch to it (FSDP 2 on a gloo
    mesh). The loss curve, every statistic and the weights are one process's; the checkpoint is complete."""
    from transformers import AutoModelForCausalLM

    fsdp = tmp_path / "fsdp"
    result = run(fsdp, "train", *SAME_RUN, "distributed=fsdp", *TWO, f"hydra.run.dir={fsdp}/job")
    assert "2 processes (FSDP)" in result.stdout + result.stderr
    assert_same_training(one_process, fsdp)
    for checkpoint in published(fsdp, "checkpoint"):
        AutoModelForCausalLM.from_pretrained(fsdp / "artifacts" / "checkpoint" / checkpoint / "model")


def hooked(tmp_path, code: str) -> dict:
    """The environment of a run whose every Python process first runs `code` (a sitecustomize module)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(code)  # imported at start-up by every Python process
    return {"PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}


INJECTED = """
import os
if os.environ.get("RANK") == "0":
    import percontrast_cli.store.artifacts as artifacts

    def broken(path):
        raise OSError("disk full (injected)")

    artifacts.payload_files = broken
"""


@pytest.mark.slow
def test_a_rank_0_publish_failure_ends_every_rank_with_one_error(tmp_path):
    result = run(
        tmp_path / "out", "estimate", "experiment=miniature", "train.warmup_steps=0", "distributed=ddp",
        *TWO, f"hydra.run.dir={tmp_path}/job", returncode=1, timeout=300, env=hooked(tmp_path, INJECTED),
    )  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if "percontrast: error" in line]
    assert len(errors) == 1 and errors[0].startswith("percontrast: error: OSError: disk full (injected)")
    assert "rank 0 of 2" in errors[0]
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr
    assert "disk full (injected)" in (tmp_path / "job" / "worker_errors" / "rank0.traceback.txt").read_text()


@pytest.mark.slow
def test_estimate_sharded_over_two_processes_gives_the_scores_of_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run(one, "estimate", "experiment=miniature")
    run(two, "estimate", "experiment=miniature", "distributed=ddp", "distributed.num_processes=2",
        "train.batch_size=2")  # fmt: skip
    assert published(one, "estimate") == published(two, "estimate")
    (estimate,) = published(one, "estimate")
    scores = [
        load_file(str(root / "artifacts" / "estimate" / estimate / "scores.safetensors"))
        for root in (one, two)
    ]
    assert np.array_equal(scores[0]["offsets"], scores[1]["offsets"])  # the same examples, in the same order
    # per-process thread counts change float summation order: equal to float tolerance
    np.testing.assert_allclose(scores[0]["scores"], scores[1]["scores"], atol=1e-5)


# Rank 1 runs out of memory in its third training step; rank 0 is then inside that step's gradient all-reduce.
OOM_MID_TRAINING = """
import os
if os.environ.get("RANK") == "1":
    import percontrast_cli.method.losses as losses

    calls, plain = [0], losses.weighted_nll

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("CUDA out of memory (injected on rank 1)")
        return plain(*args, **kwargs)

    losses.weighted_nll = failing
"""


@pytest.mark.slow
def test_a_rank_failing_mid_training_ends_every_rank_promptly_with_its_error(tmp_path):
    """No collective on the failure path: the failing rank reports and exits, the launcher stops the others
    (before, the failing rank waited in a gather the others never entered, until the group's timeout)."""
    start = time.monotonic()
    result = run(
        tmp_path / "out", "train", "experiment=miniature", "train.warmup_steps=0", "train.steps=6",
        "distributed=ddp", *TWO, "distributed.timeout_s=900", f"hydra.run.dir={tmp_path}/job",
        returncode=1, timeout=600, env=hooked(tmp_path, OOM_MID_TRAINING),
    )  # fmt: skip
    elapsed = time.monotonic() - start
    errors = [line for line in result.stderr.splitlines() if "percontrast: error" in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "CUDA out of memory (injected on rank 1)" in errors[0] and "rank 1 of 2" in errors[0]
    assert "Traceback" not in result.stderr
    assert elapsed < 300  # bounded by the launcher, far below the 900 s process-group timeout
    assert not list((tmp_path / "out" / "artifacts").glob("checkpoint/*"))


@pytest.mark.slow
def test_a_ddp_job_waits_for_a_warmup_another_job_holds_without_a_collective_timing_out(tmp_path):
    """Another job (here: this test) holds the warm-up's lock for three times the process-group timeout; the
    DDP job's rank 0 waits for it while rank 1 polls for the decision outside any collective, then builds
    the warm-up itself and trains (before, rank 1 sat in a broadcast and the job died at the timeout)."""
    from filelock import FileLock

    scratch = tmp_path / "scratch"
    run(scratch, "estimate", "experiment=miniature", "train.batch_size=4", f"hydra.run.dir={scratch}/job")
    warmup = json.loads((scratch / "job" / "artifacts.json").read_text())["start"]
    root, timeout = tmp_path / "out", 10
    lock = FileLock(str(root / "artifacts" / ".locks" / f"checkpoint-{warmup}.lock"))
    (root / "artifacts" / ".locks").mkdir(parents=True)
    lock.acquire()
    job = subprocess.Popen(
        [sys.executable, "-m", "percontrast_cli.cli", "train", "experiment=miniature", "distributed=ddp",
         *TWO, f"distributed.timeout_s={timeout}", f"hydra.run.dir={tmp_path}/job"],
        env={**os.environ, "PERCONTRAST_OUTPUTS": str(root)}, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and job.poll() is None:
            logs = "".join(p.read_text() for p in (tmp_path / "job").glob("*.log"))
            if f"waiting for checkpoint {warmup}" in logs:
                break
            time.sleep(1)
        assert job.poll() is None, job.communicate()[1][-3000:]
        time.sleep(3 * timeout)  # the job waits longer than any collective may
    finally:
        lock.release()
    out, err = job.communicate(timeout=600)
    assert job.returncode == 0, err[-3000:]
    assert warmup in published(root, "checkpoint") and len(published(root, "checkpoint")) == 2
