"""Scale-out on accelerate: every distributed option gives a valid accelerate config; a 2-process CPU (gloo)
run trains the same checkpoint as one process with the same global batch, and sharded scoring gives the
scores of one process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from safetensors.numpy import load_file
from safetensors.torch import load_file as load_weights

from percontrast_cli.validation import validate_config
from percontrast_cli.worker import accelerate_config

OPTIONS = ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"]


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


def run(root, *args):
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(root)}
    result = subprocess.run(
        [sys.executable, "-m", "percontrast_cli.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=root.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def published(root, kind):
    return sorted(p.name for p in (root / "artifacts" / kind).iterdir() if not p.name.startswith("."))


@pytest.mark.slow
def test_two_gloo_processes_train_what_one_process_trains(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run(one, "train", "experiment=miniature", "train.batch_size=4")
    out = run(two, "train", "experiment=miniature", "distributed=ddp", "distributed.num_processes=2",
              "train.batch_size=2")  # fmt: skip
    assert published(one, "checkpoint") == published(two, "checkpoint")  # same ids: same global batch
    assert not list((two / "artifacts").glob("*/.tmp-*"))  # written once, by rank 0
    assert out.count("trained checkpoint") == 2  # one line per artifact, not one per rank
    for checkpoint in published(one, "checkpoint"):
        logs = [json.loads((root / "artifacts" / "checkpoint" / checkpoint / "log_history.json").read_text())
                for root in (one, two)]  # fmt: skip
        losses = [[(h["step"], h["loss"]) for h in log if "loss" in h] for log in logs]
        assert len(losses[0]) == 2
        for (step_a, a), (step_b, b) in zip(*losses, strict=True):
            assert step_a == step_b and a == pytest.approx(b, abs=1e-5)
        files = [
            root / "artifacts" / "checkpoint" / checkpoint / "model" / "model.safetensors"
            for root in (one, two)
        ]
        weights = [load_weights(str(f)) for f in files]
        for name, value in weights[0].items():
            torch.testing.assert_close(weights[1][name], value, atol=1e-6, rtol=1e-5)


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
