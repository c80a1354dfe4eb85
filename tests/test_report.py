"""Sweeps, reports, heatmaps and tracking (issue: experiments people can read)."""

import csv
import io
import os
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from hydra import compose, initialize_config_module
from rich.console import Console

from percontrast_cli.reporting.heatmap import ScoredToken, html_heatmap, terminal_heatmap

from .test_end_to_end import cli


class TokenSpans(HTMLParser):
    def __init__(self):
        super().__init__()
        self.spans = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "span" and "tok" in attrs.get("class", "").split():
            self.spans.append(attrs)


TOKENS = [
    ScoredToken("Hello", 0.01, False),
    ScoredToken(" Nike", 2.5, True),
    ScoredToken(" <&>", -0.7, False),
]


def test_html_heatmap_has_one_coloured_span_per_token_with_its_score():
    page = html_heatmap(TOKENS, "t")
    parser = TokenSpans()
    parser.feed(page)
    assert len(parser.spans) == len(TOKENS)
    for attrs, token in zip(parser.spans, TOKENS, strict=True):
        assert attrs["title"] == f"s={token.score:+.4f}"
        assert attrs["style"].startswith("background:rgb(")
        assert ("personal" in attrs["class"]) == token.personal
    assert "&lt;&amp;&gt;" in page  # token text is escaped


def test_terminal_heatmap_renders_without_a_tty():
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=False, width=80).print(terminal_heatmap(TOKENS))
    assert buffer.getvalue().strip() == "Hello Nike <&>"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return width, height, len(data)


def report_rows(tmp_path, root, out_dir, *evals):
    """`percontrast report` over eval dirs: what it printed, and its report.csv rows."""
    listed = ",".join(str(e) for e in evals)
    shown = cli("report", f"report.evals=[{listed}]", f"report.out_dir={out_dir}", root=root, cwd=tmp_path)
    return shown, list(csv.DictReader((out_dir / "report.csv").open()))


def test_a_warm_up_lr_spelled_two_ways_is_one_group_pair(tmp_path):
    """`train.warmup_lr` null and equal to train.lr are one warm-up and one checkpoint id; a checkpoint found
    (not trained) carries the spelling that made it first. The report groups by the effective warm-up lr, so
    PerCE still meets its CE (before: two groups, no Δ, nothing said; the claims strength study hit it)."""
    root = tmp_path / "out"
    ce = cli(
        "run",
        "experiment=miniature",
        "loss=ce",
        "train.lr=1e-3",
        "train.warmup_lr=1e-3",
        f"hydra.run.dir={tmp_path / 'ce'}",
        root=root,
        cwd=tmp_path,
    )
    assert ce.count("trained checkpoint") == 2  # the warm-up, then CE
    perce = cli(
        "run",
        "experiment=miniature",
        "loss=perce",
        "train.lr=1e-3",
        f"hydra.run.dir={tmp_path / 'pc'}",
        root=root,
        cwd=tmp_path,
    )
    assert perce.count("trained checkpoint") == 1  # the warm-up was found: the same one
    out_dir = tmp_path / "report"
    shown, rows = report_rows(tmp_path, root, out_dir, tmp_path / "ce", tmp_path / "pc")
    assert [r["label"] for r in rows] == ["loss=ce", "loss=perce"]
    assert rows[1]["rougeL_delta"] != "" and "WARNING" not in shown


@pytest.mark.slow
def test_sweep_rerun_skips_then_report_and_inspect(tmp_path):
    root = tmp_path / "out"
    sweep = ["run", "-m", "experiment=miniature", "loss=ce,perce", "seed=0,1"]
    first = cli(*sweep, "hydra.sweep.dir=" + str(tmp_path / "sweep1"), root=root, cwd=tmp_path)
    assert first.count("trained checkpoint") == 2 + 4  # two warm-ups (one per seed), then 2 x 2 jobs
    rerun = cli(*sweep, "hydra.sweep.dir=" + str(tmp_path / "sweep2"), root=root, cwd=tmp_path)
    assert not re.search(r"^(trained|estimated|built) ", rerun, re.M)
    assert rerun.count("skip eval") == 4

    out_dir = tmp_path / "report"
    shown, rows = report_rows(tmp_path, root, out_dir, tmp_path / "sweep2")
    assert [r["label"] for r in rows] == ["loss=ce", "loss=perce"]
    assert all(r["seeds"] == "0,1" and r["n_users"] == "2" and r["n_examples"] == "4" for r in rows)
    assert 0 <= float(rows[0]["personal_token_acc_mean"]) <= 1
    assert float(rows[0]["personal_token_acc_std"]) >= 0
    assert rows[0]["personal_token_loss_gain"] == "" and float(rows[1]["personal_token_loss_gain"]) > -1
    for metric in (
        "persona_recall",
        "reference_nll",
        "personal_token_acc",
        "rougeL",
        "meteor",
        "generated_words",
    ):
        low, delta, high = (float(rows[1][f"{metric}_{part}"]) for part in ("ci_low", "delta", "ci_high"))
        assert low <= delta <= high, metric
    page = (out_dir / "report.md").read_text()
    assert page.startswith("# Report: sweep2") and "| loss=perce |" in page and "## Legend" in page
    assert "crossed bootstrap: seeds x users" in page
    assert "reference_nll (lower is better)" in shown and "  loss=perce  " in shown  # the console summary
    # alpha is not swept (CE and PerCE at the paper's alpha): no alpha plot, the Δ plot instead
    assert not list(out_dir.glob("*_vs_alpha.png"))
    for name in ("differences_vs_ce.png", "token_loss_curves.png"):
        width, height, size = png_size(out_dir / name)
        assert width >= 400 and height >= 200 and size > 10_000, name

    # online PerCE computes no estimate artifact: `inspect estimate=latest` scores the latest checkpoint, on
    # its own task (no experiment= needed: the settings come from the checkpoint's manifest)
    assert not (root / "artifacts" / "estimate").exists()
    html_out = tmp_path / "heat.html"
    shown = cli(
        "inspect",
        "estimate=latest",
        "example=1",
        f"inspect.out={html_out}",
        root=root,
        cwd=tmp_path,
    )
    assert "top 10 tokens" in shown
    parser = TokenSpans()
    parser.feed(html_out.read_text())
    assert len(parser.spans) > 10 and any("personal" in s["class"] for s in parser.spans)


@pytest.mark.slow
def test_wandb_offline_writes_a_local_run_with_metrics(tmp_path):
    root = tmp_path / "out"
    env_blocked = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    os.environ.update(env_blocked)  # any network attempt would fail loudly
    try:
        cli(
            "run",
            "experiment=miniature",
            "tracker=wandb",
            "estimator.refresh=rounds",  # a run that computes an estimate logs its heatmap
            f"hydra.run.dir={tmp_path / 'job'}",
            root=root,
            cwd=tmp_path,
        )
    finally:
        for key in env_blocked:
            os.environ.pop(key)
    runs = list((tmp_path / "job" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (log,) = runs[0].glob("*.wandb")
    data = log.read_bytes()
    for key in (
        b"eval/rougeL",
        b"eval/personal_token_acc",
        b"personal_loss",
        b"train_perce-rounds/loss",
        b"estimate/heatmap_example0",
    ):
        assert key in data, key


@pytest.mark.parametrize("launcher", ["submitit_slurm", "slurm"])
def test_slurm_launcher_preset_composes(launcher):
    import percontrast_cli.cli.worker  # noqa: F401  registers the percontrast.per_machine resolver

    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    if launcher == "slurm":
        assert cfg.hydra.launcher.timeout_min == 240 and cfg.hydra.launcher.gpus_per_node == 1


def test_report_without_evals_is_a_clear_error(tmp_path):
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(tmp_path / "out")}
    result = subprocess.run(
        [sys.executable, "-m", "percontrast_cli.cli", "report"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2 and "no eval artifact exists yet" in result.stderr


@pytest.mark.slow
def test_wandb_multirun_jobs_are_separate_runs_in_one_sweep_group(tmp_path, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    sweep_dir = tmp_path / "sweeps" / "2026-01-01" / "12-00-00"
    cli(
        "run",
        "-m",
        "experiment=miniature",
        "tracker=wandb",
        "loss=ce,perce",
        f"hydra.sweep.dir={sweep_dir}",
        root=tmp_path / "out",
        cwd=tmp_path,
    )
    logs = [
        next(run.glob("*.wandb"))
        for job in ("0", "1")
        for run in (sweep_dir / job / "wandb").glob("offline-run-*")
    ]
    assert len(logs) == 2 and logs[0].parent != logs[1].parent
    for log in logs:
        assert b"sweep-2026-01-01-12-00-00" in log.read_bytes()
