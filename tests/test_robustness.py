"""Nothing stale, nothing silent (artifact ids: tests/test_identity.py): fingerprints, non-finite values,
checkpoints without weights, plain progress lines in logs, and sweeps that survive a failing job."""

import json
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_module

from percontrast_cli.cli.tracking import NullTracker
from percontrast_cli.method.trainer import ScoreTable, fit
from percontrast_cli.modeling.load import load_model_and_tokenizer, tokenizer_fingerprint, weights_fingerprint
from percontrast_cli.runtime.errors import PercontrastError

from .conftest import loss_config
from .test_modeling import TRAIN


def composed(*overrides):
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_tokenizer_fingerprint_covers_the_chat_template(tokenizer):
    before = tokenizer_fingerprint(tokenizer)
    tokenizer.chat_template = "{{ messages[0]['content'] }}"
    try:
        assert tokenizer_fingerprint(tokenizer) != before
    finally:
        tokenizer.chat_template = None


def test_local_weights_are_fingerprinted_by_content(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"a" * 100)
    first = weights_fingerprint(model_dir, None, tmp_path / "cache")
    (model_dir / "model.safetensors").write_bytes(b"b" * 100)  # same name, same size
    assert weights_fingerprint(model_dir, None, tmp_path / "cache") != first
    assert weights_fingerprint("org/model", "abc", tmp_path) != weights_fingerprint(
        "org/model", "def", tmp_path
    )


def test_checkpoint_without_weights_names_the_file_not_the_hub(model, tokenizer, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(PercontrastError) as err:
        load_model_and_tokenizer(tmp_path / "ckpt")
    assert "no model weights" in str(err.value) and str(tmp_path / "ckpt") in str(err.value)
    assert "unreachable" not in str(err.value) and "offline" not in str(err.value)


def test_non_finite_score_stops_training_naming_step_and_example(model, tokenizer, training_items, tmp_path):
    items = [{**item, "index": i, "id": f"ex-{i}"} for i, item in enumerate(training_items)]
    lengths = [sum(1 for x in item["labels"] if x != -100) for item in items]
    values = [torch.ones(n) for n in lengths]
    values[2][1] = float("nan")
    with pytest.raises(PercontrastError, match=r"non-finite token weights \(scores\) at training step \d+: "):
        fit(
            model,
            tokenizer,
            items,
            train_cfg=TRAIN,
            loss_cfg=loss_config("perce"),
            online_refresh=False,
            steps=4,
            seed=0,
            work_dir=tmp_path / "work",
            device="cpu",
            tracker=NullTracker(),
            description="nan",
            score_table=ScoreTable(values),
        )


def cli(*args, root, cwd):
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(root)}
    return subprocess.run(
        [sys.executable, "-m", "percontrast_cli.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path, splits):
    from percontrast_cli.data.schema import write_examples

    good = tmp_path / "good.jsonl"
    write_examples(splits["train"] + splits["test"], good)
    one_user = tmp_path / "one_user.jsonl"
    write_examples([e for e in splits["train"] if e.user_id == splits["train"][0].user_id], one_user)
    sweep = tmp_path / "sweep"
    result = cli(
        "run",
        "-m",
        "experiment=miniature",
        f"data.path={one_user},{good}",
        f"hydra.sweep.dir={sweep}",
        root=tmp_path / "out",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "need at least 2 users to split by user" in result.stderr
    assert "1 job(s) of the sweep failed" in result.stderr and "Traceback" not in result.stderr
    (failure,) = [json.loads(line) for line in (sweep / "failures.jsonl").read_text().splitlines()]
    assert failure["job"] == 0 and "one_user.jsonl" in failure["overrides"]
    assert "need at least 2 users" in (sweep / "0" / "error.txt").read_text()
    # the second job ran to the end, and its log file has the plain progress lines and the metrics
    assert json.loads((sweep / "1" / "artifacts.json").read_text())["eval"]
    log = next((sweep / "1").glob("*.log")).read_text()
    assert "train perce: step 4/4 loss" in log and "eta" in log and "rougeL" in log
    # not a terminal: the plain progress lines are printed too
    assert "train warmup: step 2/4" in result.stderr
