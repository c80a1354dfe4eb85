"""The command line: clear errors with exit code 2, help, and every config composing and validating."""

import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from percontrast_cli.cli import main
from percontrast_cli.validation import validate_config


def cli(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "percontrast_cli.cli", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["frobnicate"], "unknown stage 'frobnicate'"),
        (["run", "loss=nope"], "Could not find 'loss/nope'"),
        (["run", "estimator.counterfactual=bogus"], "estimator.counterfactual='bogus' is not one of"),
        (["train", "-m", "loss.alpha=1,-2"], "loss.alpha=-2 must be a number >= 0"),
        (["run", "train.stepz=3"], "bad override"),
        (["run", "data.path=/no/such.jsonl"], "data.path='/no/such.jsonl': no such file or directory"),
        (["run", "task=email"], "task=email is not public"),
        (["run", "seed=abc"], "seed='abc' must be an integer"),
        (["run", "train.scheduler=bogus"], "train.scheduler='bogus' is not one of: linear, cosine"),
        (["run", "model.hidden_size=30"], "model.hidden_size=30 is not divisible by model.num_heads=4"),
        (["run", "train.steps=2.5"], "train.steps=2.5 must be an integer >= 1"),
        (["run", "data.test_fraction=1.5"], "data.test_fraction=1.5 must be a number in (0, 1)"),
        (["run", "data.test_fraction=0"], "data.test_fraction=0 must be a number in (0, 1)"),
        (["run", "data.path=data.csv"], "data.path='data.csv': unsupported file type '.csv'"),
        (["run", "loss.normalize=mean"], "loss.normalize='mean' is not one of: tokens, weights"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args, message, tmp_path, monkeypatch, capsys):
    """In-process through the console script's own `main` (a subprocess per case costs seconds)."""
    (tmp_path / "data.csv").write_text("user_id,input,output\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["percontrast", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in stderr, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


def test_help_lists_stages_and_groups(tmp_path):
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for word in ("estimate", "train", "eval", "run", "loss", "ce, perce", "synthetic_review", "wandb"):
        assert word in result.stdout


def group_options():
    root = resources.files("percontrast_cli") / "conf"
    for group in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for option in sorted(p.name[:-5] for p in (root / group).iterdir() if p.name.endswith(".yaml")):
            yield f"{group}={option}"


# Options that need a companion setting to be valid (the email task has no public data).
COMPANIONS = {
    "task=email": [f"data.path={Path(__file__).parent / 'fixtures' / 'longlamp' / 'email.jsonl'}"],
    "task=aloe": [f"data.path={Path(__file__).parent / 'fixtures' / 'aloe'}", "eval.judge=smollm2"],
}


@pytest.mark.parametrize("override", list(group_options()))
def test_every_config_option_composes_and_validates(override):
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=[override, *COMPANIONS.get(override, [])])
    validate_config(cfg)
