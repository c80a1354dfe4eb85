"""Run the robustness cases that fit in a few minutes at miniature size, as a new user would type them, print
one verdict per case, and regenerate the probe table of docs/robustness.md (between its probe markers).

    python scripts/robustness_probe.py            # all cases (~3-5 min on 2 CPU cores), rewrites the table
    python scripts/robustness_probe.py --quick    # only the one-line cases (seconds each)
    python scripts/robustness_probe.py --no-write # print the verdicts, leave the docs alone

A verdict is OK when the command ends as the case expects (exit code, one line on stderr naming what it must
name, no traceback, and the case's own check: nothing touched, nothing left running, nothing outside the
current directory); anything else is WRONG, with what was seen. Exit status: the number of WRONG cases.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "robustness.md"
BEGIN, END = "<!-- probe:begin -->", "<!-- probe:end -->"
FIXTURES = ROOT / "tests" / "fixtures"


@dataclass
class Case:
    name: str  # what a user does
    args: list[str]
    code: int = 2  # the exit code expected
    says: str = ""  # what stderr's last line must contain
    test: str = ""  # the test that holds it
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None  # prepares the case's directory
    check: Callable[[Path, subprocess.CompletedProcess], str | None] | None = None  # a problem, or None
    slow: bool = False
    run: Callable[[Case, Path, dict], tuple[subprocess.CompletedProcess, str | None]] | None = None


def command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "percontrast_cli.cli", *args]


def tree(root: Path) -> list[tuple[str, int]]:
    sizes = ((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))
    return sorted(sizes)


def fake_artifact(root: Path, kind: str, artifact_id: str, name: str | None = None) -> Path:
    """A complete artifact directory without payload (what a copy or an edit leaves)."""
    path = root / "out" / "artifacts" / kind / (name or artifact_id)
    path.mkdir(parents=True)
    manifest = {"kind": kind, "id": artifact_id, "created": time.time(), "config": {}, "inputs": {}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def untouched(case_dir: Path, result) -> str | None:
    before = json.loads((case_dir / ".tree.json").read_text())
    return None if before == watched(case_dir) else "the store (or the user's directory) changed"


def watched(case_dir: Path) -> list:
    """The artifacts and the user's directory (Hydra's run dir beside them is the run's own log)."""
    places = [case_dir / "out" / "artifacts", case_dir / "mydata"]
    return [[str(place), *item] for place in places if place.exists() for item in tree(place)]


def snapshot(case_dir: Path) -> None:
    (case_dir / ".tree.json").write_text(json.dumps(watched(case_dir)))


def renamed_copy(case_dir: Path) -> None:
    fake_artifact(case_dir, "checkpoint", "aaaaaaaaaaaa", name="bbbbbbbbbbbb")
    snapshot(case_dir)


def eval_in_checkpoint(case_dir: Path) -> None:
    fake_artifact(case_dir, "eval", "cccccccccccc")
    fake_artifact(case_dir, "checkpoint", "cccccccccccc").joinpath("manifest.json").write_text(
        (case_dir / "out/artifacts/eval/cccccccccccc/manifest.json").read_text()
    )
    snapshot(case_dir)


def user_directory(case_dir: Path) -> None:
    (case_dir / "mydata").mkdir()
    (case_dir / "mydata" / "notes.txt").write_text("mine")
    (case_dir / "out").mkdir()
    snapshot(case_dir)


def broken_job_record(content: str):
    def setup(case_dir: Path) -> None:
        job = case_dir / "sweep" / "0"
        job.mkdir(parents=True)
        (job / "artifacts.json").write_text(content)

    return setup


def a_file(case_dir: Path) -> None:
    (case_dir / "notes.txt").write_text("a file")


def non_utf8_data(case_dir: Path) -> None:
    rows = (FIXTURES / "longlamp" / "review.jsonl").read_bytes()
    (case_dir / "bad.jsonl").write_bytes(rows.replace(b"waterproof", b"waterpr\xe9of", 1))


def huge_item(case_dir: Path) -> None:
    lines = (FIXTURES / "longlamp" / "review.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    row["profile"][0]["reviewText"] = "x" * 10_000_000
    lines[0] = json.dumps(row)
    (case_dir / "huge.jsonl").write_text("\n".join(lines) + "\n")


def nothing_outside(case_dir: Path, result) -> str | None:
    extra = sorted(set(os.listdir(case_dir)) - {"outputs", "tmp", ".tree.json"})
    if extra or any((case_dir / "tmp").iterdir()):
        return f"wrote outside the current directory: {extra or os.listdir(case_dir / 'tmp')}"
    weights = next((case_dir / "outputs" / "artifacts").glob("checkpoint/*/model/model.safetensors"), None)
    if weights is None:
        return "no checkpoint published"
    if weights.stat().st_mode & 0o777 != 0o664:
        return f"weights published as {oct(weights.stat().st_mode & 0o777)} under umask 002 (expected 0o664)"
    return None


def run_and_interrupt(case: Case, case_dir: Path, env: dict):
    """Ctrl-C as soon as the huge item's warning shows; the seconds until the run ends."""
    proc = subprocess.Popen(
        command(case.args),
        cwd=case_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines, sent = [], None
    for line in proc.stderr:
        lines.append(line)
        if sent is None and "cut to data.max_text_chars" in line:
            proc.send_signal(signal.SIGINT)
            sent = time.monotonic()
    proc.wait()
    waited = None if sent is None else time.monotonic() - sent
    problem = "the huge item was never cut" if sent is None else None
    if waited is not None and waited > 10:
        problem = f"Ctrl-C answered after {waited:.0f} s"
    result = subprocess.CompletedProcess(case.args, proc.returncode, "", "".join(lines))
    return result, problem


def kill_the_launcher(case: Case, case_dir: Path, env: dict):
    """kill -9 of `percontrast` once its agent and both workers run: none of them may outlive it by 10 s."""
    import psutil

    proc = subprocess.Popen(
        command(case.args), cwd=case_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    family, deadline, workers = psutil.Process(proc.pid), time.monotonic() + 180, []
    while time.monotonic() < deadline and proc.poll() is None and len(workers) < 3:
        workers = [p for p in family.children(recursive=True) if "cli.worker" in " ".join(p.cmdline())]
        time.sleep(0.2)
    if len(workers) < 3:
        return subprocess.CompletedProcess(case.args, proc.returncode, "", ""), "the workers never started"
    time.sleep(3)
    descendants = family.children(recursive=True)
    artifacts = case_dir / "out" / "artifacts"
    before = sorted(str(p) for p in artifacts.glob("[!.]*/[!.]*"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(10)

    def alive(p):
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    left = [p.pid for p in descendants if alive(p)]
    time.sleep(5)
    after = sorted(str(p) for p in artifacts.glob("[!.]*/[!.]*"))
    problem = f"processes {left} still running" if left else None
    if after != before:
        problem = f"published after the launcher died: {sorted(set(after) - set(before))}"
    return subprocess.CompletedProcess(case.args, -9, "", ""), problem


MINI = ["experiment=miniature"]
CASES = [
    Case("unknown stage `rn`", ["rn"], says="unknown stage 'rn' (did you mean 'run'?)",
         test="test_cli.py::test_bad_input_is_one_clear_line_and_exit_2"),
    Case("`seed=4294967296` (numpy's seed range)", ["run", *MINI, "seed=4294967296"],
         says="seed=4294967296 must be an integer in [0, 4294967295]", test="same"),
    Case("`seed=1e26`", ["run", *MINI, "seed=1e26"], says="must be an integer >= 0", test="same"),
    Case("`train.steps=2**70`", ["run", *MINI, f"train.steps={2**70}"], says="must be an integer in [1, ",
         test="same"),
    Case("`eval.meteor=maybe`", ["run", *MINI, "eval.meteor=maybe"], says="must be true or false",
         test="same"),
    Case("`example=abc` (inspect)", ["inspect", "example=abc"], says="example='abc' must be an integer >= 0",
         test="same"),
    Case("`paths.root=` (empty)", ["run", *MINI, "paths.root="], says="paths.root='' is empty", test="same"),
    Case("`data.path=` (empty)", ["run", *MINI, "data.path="], says="data.path='' is empty", test="same"),
    Case("`report.out_dir` under a file", ["report", "report.out_dir=notes.txt/r"], setup=a_file,
         says="notes.txt is a file, not a directory", test="same"),
    Case("`inspect.out` under a file", ["inspect", "estimate=latest", "inspect.out=notes.txt/x.html"],
         setup=a_file, says="notes.txt is a file, not a directory", test="same"),
    Case("`data.limit=2` with `task=aloe` (was ignored: a 20-minute run)",
         ["eval", "task=aloe", f"data.path={FIXTURES / 'aloe'}", "eval.judge=smollm2", "data.limit=2"],
         says="data.limit=2 does not apply to task=aloe", test="same"),
    Case("`PERCONTRAST_OUTPUTS` is a file", ["run", *MINI], env={"PERCONTRAST_OUTPUTS": "notes.txt"},
         setup=a_file, says="Not a directory",
         test="test_cli.py::test_outputs_pointing_at_a_file_is_one_line"),
    Case("non-UTF-8 byte in a data file", ["run", *MINI, "task=review", "data.path=bad.jsonl"],
         setup=non_utf8_data, says="line 1: byte 0xe9 at column",
         test="test_data.py, test_aloe.py (ALOE's files)"),
    Case("a manifest whose `id` is not its directory's name", ["eval", "checkpoint=bbbbbbbbbbbb"],
         setup=renamed_copy, check=untouched, says="says id 'aaaaaaaaaaaa' but its directory is named",
         test="test_artifacts.py::test_an_artifact_that_is_not_what_its_place_says_...[renamed]"),
    Case("an eval directory copied into `checkpoint/` under its id", ["eval", "checkpoint=cccccccccccc"],
         setup=eval_in_checkpoint, check=untouched, says="kind 'eval' but it sits in the 'checkpoint' folder",
         test="same, [other kind]"),
    Case("`eval checkpoint=<a user's directory>`", ["eval", "checkpoint=mydata"], setup=user_directory,
         check=untouched, says="mydata is not a checkpoint artifact: no manifest.json",
         test="test_faults.py::test_eval_of_a_user_directory_touches_nothing"),
    Case("sweep job with a truncated `artifacts.json`", ["report", "report.evals=[sweep]"],
         setup=broken_job_record('{"eval": "ab'), says="artifacts.json: not valid JSON",
         test="test_contract.py::test_a_broken_job_record_in_a_sweep_is_one_line_naming_it"),
    Case("sweep job whose `artifacts.json` is not an object", ["report", "report.evals=[sweep]"],
         setup=broken_job_record("[1, 2]"), says="a JSON list, not an object of artifact ids", test="same"),
    Case("`PERCONTRAST_OUTPUTS= HOME= percontrast run experiment=miniature` under umask 002",
         ["run", *MINI], code=0, env={"PERCONTRAST_OUTPUTS": "", "HOME": ""}, check=nothing_outside,
         test="test_contract.py::test_empty_outputs_and_home_write_nothing_outside_the_current_directory, "
         "test_artifacts.py::test_published_files_follow_the_umask_...", slow=True),
    Case("a 10 MB profile item without whitespace, then Ctrl-C", ["run", *MINI, "task=review",
         "data.path=huge.jsonl"], code=130, setup=huge_item, run=run_and_interrupt, says="interrupted",
         test="test_contract.py::test_a_huge_profile_item_is_cut_with_a_warning_and_ctrl_c_...", slow=True),
    Case("`kill -9` of the launcher of a 2-process gloo run", ["run", *MINI, "distributed=ddp",
         "distributed.num_processes=2", "distributed.main_process_port=29533"], code=-9,
         run=kill_the_launcher,
         test="test_contract.py::test_killing_the_launcher_of_a_two_process_run_...", slow=True),
]  # fmt: skip


def probe(case: Case, base: Path) -> tuple[bool, str]:
    case_dir = Path(tempfile.mkdtemp(prefix="case-", dir=base))
    (case_dir / "tmp").mkdir()
    env = {
        **os.environ,
        "PERCONTRAST_OUTPUTS": str(case_dir / "out"),
        "TMPDIR": str(case_dir / "tmp"),
        "PYTHONPATH": str(ROOT / "src"),
        **case.env,
    }
    if case.setup:
        case.setup(case_dir)
    if case.run:
        result, problem = case.run(case, case_dir, env)
    else:
        result = subprocess.run(
            command(case.args),
            cwd=case_dir,
            env=env,
            capture_output=True,
            text=True,
            preexec_fn=lambda: os.umask(0o002),
        )
        problem = case.check(case_dir, result) if case.check else None
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "(nothing on stderr)"
    if result.returncode != case.code:
        problem = problem or f"exit {result.returncode}, expected {case.code}"
    elif "Traceback" in result.stderr:
        problem = problem or "a traceback"
    elif case.code == 2 and len(lines) != 1:
        problem = problem or f"{len(lines)} lines on stderr"
    elif case.says and case.says not in last:
        problem = problem or f"the last line does not say {case.says!r}"
    shutil.rmtree(case_dir, ignore_errors=True)
    seen = last.removeprefix("percontrast: ").replace(str(case_dir), "<dir>")
    if problem is None and case.run is kill_the_launcher:
        seen = "every process of the run gone within 10 s, nothing published"
    elif problem is None and case.code == 0:
        seen = "exit 0; nothing outside the current directory; weights 0664 under umask 002"
    return problem is None, seen if problem is None else f"{problem}: {seen}"


def table(rows: list[tuple[Case, bool, str]]) -> str:
    out = ["| case | what the user sees (measured) | verdict | test |", "|---|---|---|---|"]
    for case, ok, seen in rows:
        seen = seen.replace("|", "\\|")
        if len(seen) > 240:
            seen = seen[:237] + "..."
        out.append(f"| {case.name} | `{seen}` (exit {case.code}) | {'OK' if ok else 'WRONG'} | {case.test} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the one-line cases")
    parser.add_argument("--no-write", action="store_true", help="leave docs/robustness.md as it is")
    parser.add_argument("--only", help="only the cases whose name contains this text (writes nothing)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="percontrast-probe-") as base:
        for case in CASES:
            if (args.quick and case.slow) or (args.only and args.only not in case.name):
                continue
            started = time.monotonic()
            ok, seen = probe(case, Path(base))
            print(f"{'OK   ' if ok else 'WRONG'} {case.name} ({time.monotonic() - started:.0f} s): {seen}",
                  flush=True)  # fmt: skip
            rows.append((case, ok, seen))
    if not (args.no_write or args.quick or args.only):
        text = DOC.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        DOC.write_text(text[:start] + "\n" + table(rows) + "\n" + text[end:])
        print(f"wrote the probe table of {DOC}")
    return sum(not ok for _, ok, _ in rows)


if __name__ == "__main__":
    sys.exit(main())
