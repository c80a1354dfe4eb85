"""Logs people can read (issue 20): results on stdout, progress and warnings on stderr, one message per line
off a terminal, the sweep dir and the `report` command at the end, and a resumed training that says so."""

import logging
import os
import re
import shlex
import subprocess
import sys

import pytest
from rich.table import Table
from transformers import TrainerCallback

from percontrast_cli.cli.tracking import NullTracker
from percontrast_cli.method.trainer import fit
from percontrast_cli.runtime import progress

from .test_modeling import PERCE, TRAIN

LONG = "trained checkpoint 0123456789ab (perce)" + " with a message far longer than any terminal" * 5


def test_messages_off_a_terminal_are_never_wrapped(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")  # even a narrow declared width: a log line is one message
    progress.say(LONG)
    progress.warn(LONG, fix="raise model.max_length " + ("to the length the task needs " * 5).strip())
    err = capsys.readouterr().err.splitlines()
    assert err[0] == LONG
    assert err[1].startswith("warning: trained checkpoint") and err[1].endswith("the task needs")
    assert " terminal; fix: raise model.max_length " in err[1]
    assert len(err) == 2


def test_results_go_to_stdout_and_progress_to_stderr(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    table = Table(title="eval 0123456789ab (checkpoint 0123456789ab), a wide title")
    table.add_column("path")
    table.add_row("/a/very/long/path/" * 8)
    progress.show(table)
    progress.say("skip model 0123 exists")
    captured = capsys.readouterr()
    assert captured.err == "skip model 0123 exists\n"
    lines = captured.out.splitlines()
    assert "/a/very/long/path/" * 8 in captured.out  # the cell is not wrapped
    assert len(lines) == 6  # title, top rule, header, rule, the row, bottom rule
    assert "┃" not in captured.err


def test_warnings_reach_the_job_log_at_warning_level(caplog):
    with caplog.at_level(logging.INFO, logger="percontrast"):
        progress.warn("every target was cut", fix="model.max_length=512")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "warning: every target was cut; fix: model.max_length=512"


class Crash(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt("simulated crash")


def test_a_resumed_training_says_from_which_step(model, tokenizer, training_items, tmp_path, capsys):
    train_cfg = TRAIN.copy()
    train_cfg.save_every = 2
    kwargs = dict(
        train_cfg=train_cfg,
        loss_cfg=PERCE,
        online_refresh=True,
        steps=4,
        seed=0,
        work_dir=tmp_path / "work",
        device="cpu",
        tracker=NullTracker(),
        description="train perce",
    )
    with pytest.raises(KeyboardInterrupt):
        fit(model, tokenizer, training_items, extra_callbacks=(Crash(),), **kwargs)
    assert "resuming" not in capsys.readouterr().err  # a fresh run starts without the note
    fit(model, tokenizer, training_items, **kwargs)
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("train perce: resuming from step 2 of 4") for line in err), err
    # the progress lines count the steps of the whole run, not of the resumed part
    assert any(line.startswith("train perce: step 4/4 ") for line in err), err


def percontrast(*args, root, cwd, env=None):
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(root), "COLUMNS": "60", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "percontrast_cli.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def job_log_messages(sweep_dir) -> set[str]:
    """Every one-line message the jobs recorded in their log files (one record per message)."""
    messages = set()
    for log_file in sweep_dir.glob("*/*.log"):
        for line in log_file.read_text().splitlines():
            if match := re.match(r"\[[^]]+\]\[percontrast\]\[\w+\] - (.*)$", line):
                messages.add(match.group(1))
    return messages


@pytest.mark.slow
def test_sweep_output_is_results_on_stdout_and_one_line_per_message_on_stderr(tmp_path):
    """The acceptance of issue 20: `percontrast run -m loss=ce,perce experiment=miniature > out 2> err`."""
    root = tmp_path / "out"
    sweep = percontrast("run", "-m", "loss=ce,perce", "experiment=miniature", root=root, cwd=tmp_path)
    out, err = sweep.stdout.splitlines(), sweep.stderr.splitlines()

    # stdout: the two metrics tables, the artifacts tables, the sweep dir and the report command, nothing else
    assert sum(line.startswith("eval ") and "(checkpoint " in line for line in out) == 2
    assert sum(bool(re.search(r"\bpersonal_token_acc\b", line)) for line in out) == 2
    (sweep_line,) = [line for line in out if line.startswith("sweep dir: ")]
    sweep_dir = root / "hydra" / "multirun"
    (expected,) = sweep_dir.glob("*/*")
    assert sweep_line == f"sweep dir: {expected}"
    assert out[-1].startswith("compare its 2 evals: percontrast report ")
    assert not any("train ce: step" in line or "[HYDRA]" in line for line in out)

    # stderr: every line is a whole message of a job log (or a Hydra / library log line): no line is the
    # wrapped continuation of another
    messages = job_log_messages(expected)
    assert any(m.startswith("train perce: step 4/4 loss") and "eta" in m for m in messages)
    for line in err:
        assert line in messages or line.startswith("["), f"not a whole message: {line!r}"
    assert "┃" not in sweep.stderr

    # the printed command runs as printed and prints the report's table on stdout
    command = shlex.split(out[-1].split(": ", 1)[1])
    assert command[:2] == ["percontrast", "report"]
    report = percontrast(*command[1:], f"report.out_dir={tmp_path / 'report'}", root=root, cwd=tmp_path)
    assert "report of 2 evals" in report.stderr and "loss" in report.stdout
    assert (tmp_path / "report" / "report.csv").is_file()
