"""Degenerate runs stop or warn loudly, naming the fix (issue 20): profiles or targets lost to max_length,
all-zero PerContrast scores, weights that never left the clip floor; experiment=miniature keeps a task's
lengths."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from percontrast_cli.data.encode import encode_example
from percontrast_cli.method.estimate import load_scores
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.runtime.progress import warn_if_weights_never_moved
from percontrast_cli.steps.diagnostics import check_encoding, check_scores

from .conftest import loss_config


def config(max_length=128, k=5, loss="perce"):
    return OmegaConf.create(
        {
            "model": {"max_length": max_length},
            "retrieval": {"k": k},
            "estimator": {"counterfactual": "drop"},
            "loss": loss_config(loss),
        }
    )


def encode(tokenizer, splits, max_length):
    return [
        encode_example(tokenizer, e, k=5, max_length=max_length, counterfactual="drop", pool=splits["train"])
        for e in splits["train"]
    ]


def suggested_length(message: str) -> int:
    return int(re.search(r"model\.max_length=(\d+) \(", message).group(1))


def test_profiles_cut_away_entirely_stop_with_the_length_that_fits(tokenizer, splits, capsys):
    tight = encode(tokenizer, splits, max_length=64)
    assert all(item["profile_retrieved"] == 5 and item["profile_items"] == 0 for item in tight)
    with pytest.raises(PercontrastError) as error:
        check_encoding(tight, config(64))
    message = str(error.value)
    assert message.startswith("model.max_length=64 leaves no room for the profile")
    assert "retrieval.k" in message
    # the suggested length really fits: every profile item and every whole target
    enough = suggested_length(message)
    fits = encode(tokenizer, splits, max_length=enough)
    assert all(item["profile_items"] == 5 and not item["cut"] for item in fits)
    check_encoding(fits, config(enough))
    assert capsys.readouterr().err == ""  # nothing to say


def fake(n, *, emptied=0, shortened=0, cut=0):
    items = []
    for i in range(n):
        kept = 0 if i < emptied else 3 if i < emptied + shortened else 5
        items.append({"profile_retrieved": 5, "profile_items": kept, "cut": i < cut, "needed": 300 + i})
    return items


def test_more_than_half_the_profiles_emptied_is_a_loud_warning(capsys):
    check_encoding(fake(10, emptied=6), config(256))
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: 6 of 10 prompts lost their whole profile to model.max_length=256")
    assert (
        "; fix: model.max_length=320 (the longest prompt with its whole profile, plus its target, takes 309"
        in line
    )


def test_a_few_shortened_profiles_are_a_note(capsys):
    check_encoding(fake(10, shortened=2), config(256))
    (line,) = capsys.readouterr().err.splitlines()
    assert (
        line == "note: 2 of 10 prompts dropped their least relevant profile items to fit model.max_length=256"
    )


def test_more_than_half_the_targets_cut_is_a_loud_warning_and_a_few_a_one_line_warning(capsys):
    check_encoding(fake(4, cut=3), config(256))
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: 3 of 4 targets are longer than model.max_length=256")
    assert "; fix: model.max_length=320" in line
    check_encoding(fake(4, cut=1), config(256))
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: 1 of 4 targets") and "fix" not in line


def test_no_profile_asked_for_is_not_a_lost_profile(capsys):
    items = [{"profile_retrieved": 0, "profile_items": 0, "cut": False, "needed": 40}] * 3
    check_encoding(items, config(256, k=0))
    assert capsys.readouterr().err == ""


def test_all_zero_scores_stop_perce_and_warn_otherwise(capsys):
    zeros = [np.zeros(5, dtype=np.float32), np.zeros(3, dtype=np.float32)]
    with pytest.raises(PercontrastError, match=r"every PerContrast score is 0: retrieval.k=0 .*loss=perce"):
        check_scores(zeros, config(k=0))
    with pytest.raises(PercontrastError, match=r"estimator.counterfactual=drop"):
        check_scores(zeros, config(k=5))
    check_scores(zeros, config(k=0, loss="ce"))
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: every PerContrast score is 0") and "; fix: retrieval.k=5" in line
    check_scores([np.zeros(5), np.array([0.0, 1e-6])], config())
    assert capsys.readouterr().err == ""


def test_weights_stuck_at_the_clip_floor_say_why_perce_equals_ce(capsys):
    history = [{"loss": 1.0, "weight_at_min": 1.0}, {"loss": 0.9, "weight_at_min": 1.0}, {"train_runtime": 1}]
    warn_if_weights_never_moved("train perce", history)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: train perce: every target token's weight sat at the lower clip bound")
    warn_if_weights_never_moved("train perce", [{"weight_at_min": 1.0}, {"weight_at_min": 0.97}])
    warn_if_weights_never_moved("train ce", [{"loss": 1.0, "weight_at_min": 0.0}])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("task", "length"), [("persona_email", 512), ("review", 2048), ("synthetic_email", 256)]
)
def test_miniature_keeps_the_task_length_and_the_tokenizer_vocabulary(task, length):
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        default = compose("config", overrides=[f"task={task}"])
        mini = compose("config", overrides=[f"task={task}", "experiment=miniature"])
    assert mini.model.max_length == length
    assert mini.model.vocab_size == default.model.vocab_size
    assert mini.model.hidden_size < default.model.hidden_size  # it still shrinks the model


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
def test_persona_task_at_miniature_scale_keeps_its_profiles_and_a_shrunk_one_stops(tmp_path):
    root = tmp_path / "out"
    ok = cli("estimate", "task=persona_email", "experiment=miniature", root=root, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "warning" not in ok.stderr and "note:" not in ok.stderr
    (estimate,) = (root / "artifacts" / "estimate").glob("[0-9a-f]*")
    scores = load_scores(estimate)
    assert len(scores) == 12 and all(np.any(values != 0) for values in scores.values())

    shrunk = cli(
        "run", "task=persona_email", "experiment=miniature", "model.max_length=128", root=root, cwd=tmp_path
    )
    assert shrunk.returncode == 2
    line = shrunk.stderr.strip().splitlines()[-1]
    assert line.startswith("percontrast: error: model.max_length=128 leaves no room for the profile")
    assert re.search(r"use model\.max_length=\d+ \(", line)
