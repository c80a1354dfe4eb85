"""Nothing outside the contract (issue 33): no writes outside the outputs root, the cache and Hydra's run
dir whatever the environment; no process left when the launcher dies; bounded inputs."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from .test_cli import FIXTURES, cli


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.slow
def test_empty_outputs_and_home_write_nothing_outside_the_current_directory(tmp_path):
    """`PERCONTRAST_OUTPUTS=` and `HOME=` (empty) used to mean the filesystem root (`/artifacts`, `/hydra`,
    `/.cache/percontrast`)."""
    cwd, scratch = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    scratch.mkdir()
    root_before = {p for p in ("/artifacts", "/hydra", "/.cache", "/outputs") if Path(p).exists()}
    env = {**os.environ, "PERCONTRAST_OUTPUTS": "", "HOME": "", "TMPDIR": str(scratch)}
    env.pop("PERCONTRAST_CACHE", None)
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    result = cli("run", "experiment=miniature", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HOME is not set: caches go under" in result.stderr
    assert sorted(os.listdir(cwd)) == ["outputs"]
    assert set(os.listdir(cwd / "outputs")) >= {"artifacts", "hydra", ".home"}  # the caches: under .home
    assert files_under(scratch) == set()  # not even torch's compile cache dir
    assert {p for p in ("/artifacts", "/hydra", "/.cache", "/outputs") if Path(p).exists()} == root_before


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"eval": "abc', "not valid JSON (Unterminated string"),
        ('["eval"]', "a JSON list, not an object of artifact ids"),
        ("", "not valid JSON (Expecting value"),
    ],
)
def test_a_broken_job_record_in_a_sweep_is_one_line_naming_it(
    content, problem, tmp_path, monkeypatch, capsys
):
    """A sweep job whose artifacts.json is truncated or not an object used to crash `report`."""
    from percontrast_cli.cli.main import main

    job = tmp_path / "sweep" / "0"
    job.mkdir(parents=True)
    (job / "artifacts.json").write_text(content)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["percontrast", "report", f"report.evals=[{tmp_path / 'sweep'}]"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert f"{job / 'artifacts.json'}: {problem}" in stderr


def published(artifacts: Path) -> set[str]:
    """Every published artifact directory (temp dirs and locks are no publication)."""
    return {
        str(p.relative_to(artifacts))
        for p in artifacts.glob("*/*")
        if not p.name.startswith(".") and not p.parent.name.startswith(".")  # not .locks/, .verified/
    }


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_killing_the_launcher_of_a_two_process_run_leaves_no_process_and_publishes_nothing(tmp_path):
    """kill -9 of `percontrast` used to leave its launcher agent and both workers running: they published a
    checkpoint and an eval about 20 s later, with no one to report to."""
    outputs = tmp_path / "out"
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(outputs), "OMP_NUM_THREADS": "1"}
    args = [
        "run",
        "experiment=miniature",
        "distributed=ddp",
        "distributed.num_processes=2",
        f"distributed.main_process_port={free_port()}",
    ]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "percontrast_cli.cli", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    family = psutil.Process(launcher.pid)
    deadline = time.monotonic() + 120
    workers = []
    while time.monotonic() < deadline and launcher.poll() is None:  # the agent and both ranks are up
        workers = [
            p
            for p in family.children(recursive=True)
            if "percontrast_cli.cli.worker" in " ".join(p.cmdline())
        ]
        if len(workers) >= 3:
            break
        time.sleep(0.2)
    assert len(workers) >= 3, "the agent and two workers never started"
    time.sleep(3)  # into the workers' imports and rendezvous
    descendants = family.children(recursive=True)
    before = published(outputs / "artifacts")
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    gone_by = time.monotonic() + 10
    alive = descendants
    while alive and time.monotonic() < gone_by:
        alive = [p for p in alive if running(p)]
        time.sleep(0.2)
    assert alive == [], [p.cmdline() for p in alive]
    time.sleep(5)  # they would have published by now had they carried on
    assert published(outputs / "artifacts") == before


@pytest.mark.slow
def test_a_huge_profile_item_is_cut_with_a_warning_and_ctrl_c_is_answered_at_once(tmp_path):
    """A 10 MB profile item without whitespace hung the tiny model's tokenizer training (SIGTERM ignored);
    a 300 KB one delayed Ctrl-C by about 85 s."""
    rows = [json.loads(line) for line in (FIXTURES / "longlamp" / "review.jsonl").read_text().splitlines()]
    rows[0]["profile"][0]["reviewText"] = "x" * 10_000_000
    data = tmp_path / "review.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(tmp_path / "out")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "percontrast_cli.cli", "run", "experiment=miniature", "task=review",
         f"data.path={data}"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal (see test_faults)
    )  # fmt: skip
    lines, sent = [], None
    for line in proc.stderr:
        lines.append(line)
        if sent is None and "cut to data.max_text_chars=32768" in line:
            proc.send_signal(signal.SIGINT)  # in the middle of what the huge item used to stall
            sent = time.monotonic()
    proc.wait(timeout=300)
    answered = time.monotonic() - sent
    said = "".join(lines)
    assert sent is not None, said[-3000:]
    assert f"'{rows[0]['reviewerId']}'" in said and "profile[0]: 10000" in said
    assert proc.returncode == 130 and "Traceback" not in said, said[-3000:]
    assert answered < 10, f"Ctrl-C answered after {answered:.1f} s"
