"""The user's files and the store under faults, end to end through the console script: paths that are not
artifacts, damaged weights, a read-only or full file system, Ctrl-C and SIGTERM. Each case: one line,
the right exit code, no traceback, nothing lost, and a rerun that picks up where the run stopped.

The read-only and full-disk cases mount a bind mount / a small tmpfs in a private mount namespace
(`unshare`); they are skipped where the system does not allow that."""

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

MINIATURE = ("experiment=miniature",)


def percontrast(*args, root, cwd, timeout=900):
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(root)}
    return subprocess.run(
        [sys.executable, "-m", "percontrast_cli.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def tree(root: Path, skip=("hydra", ".verified")) -> list:
    """Every path under root with its size (files) or True (dirs), Hydra's run logs and the verification
    cache left out: equal trees mean nothing was moved, renamed, deleted or rewritten in size."""
    return sorted(
        (str(p.relative_to(root)), p.is_dir() or p.stat().st_size)
        for p in root.rglob("*")
        if not set(p.relative_to(root).parts) & set(skip)
    )


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("percontrast: error:")]


def assert_one_line_exit_2(result, *fragments):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = errors(result.stderr)
    for fragment in fragments:
        assert fragment in line, line


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A store with every artifact of a miniature run, and the ids of that run."""
    base = tmp_path_factory.mktemp("finished")
    root = base / "out"
    sweep = base / "job"
    result = percontrast("run", *MINIATURE, f"hydra.run.dir={sweep}", root=root, cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, json.loads((sweep / "artifacts.json").read_text())


@pytest.fixture()
def store(finished, tmp_path):
    """A private copy of the finished store (tests damage it)."""
    root, ids = finished
    shutil.copytree(root / "artifacts", tmp_path / "out" / "artifacts", symlinks=True)
    return tmp_path / "out", ids


@pytest.mark.slow
@pytest.mark.xdist_group("finished_store")  # one worker builds the module's finished store
def test_eval_of_a_user_directory_touches_nothing(store, tmp_path):
    """`eval checkpoint=/path/to/my/data` used to rename the directory to `.broken-data-<time>`."""
    root, _ = store
    data = tmp_path / "my" / "data"
    (data / "sub").mkdir(parents=True)
    (data / "notes.txt").write_text("mine")
    before = tree(tmp_path)
    result = percontrast("eval", *MINIATURE, f"checkpoint={data}", root=root, cwd=tmp_path)
    assert_one_line_exit_2(result, f"{data} is not a checkpoint artifact: no manifest.json")
    assert tree(tmp_path) == before


def weights_of(root: Path, checkpoint: str) -> Path:
    return root / "artifacts" / "checkpoint" / checkpoint / "model" / "model.safetensors"


def corrupt_header(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(b"[not json")


def nan_weights(path: Path) -> None:
    """The first tensor's first value replaced by NaN, in place: same size, valid header."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    assert header[name]["dtype"] == "F32"
    start = 8 + n + header[name]["data_offsets"][0]
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(struct.pack("<f", float("nan")))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "problem"),
    [(corrupt_header, "its safetensors header is corrupt"), (nan_weights, "holds NaN or infinite values")],
)
@pytest.mark.xdist_group("finished_store")  # one worker builds the module's finished store
def test_corrupt_same_size_weights_are_one_line_and_nothing_is_lost(store, tmp_path, damage, problem):
    """These were 29- and 36-line tracebacks (SafetensorError; `Input contains NaN` from scikit-learn)."""
    root, ids = store
    weights = weights_of(root, ids["checkpoint"])
    size = weights.stat().st_size
    damage(weights)
    assert weights.stat().st_size == size
    before = tree(root)
    result = percontrast("eval", *MINIATURE, f"checkpoint={ids['checkpoint']}", root=root, cwd=tmp_path)
    assert_one_line_exit_2(
        result,
        f"checkpoint artifact {ids['checkpoint']} is damaged: {weights} changed since it was written",
        problem,
        f"delete {weights.parent.parent} and rerun",
    )
    assert tree(root) == before


@pytest.mark.slow
@pytest.mark.xdist_group("finished_store")  # one worker builds the module's finished store
def test_latest_names_the_damaged_checkpoint_it_passes_over(store, tmp_path):
    """`eval checkpoint=latest` with truncated weights was a traceback."""
    root, ids = store
    weights = weights_of(root, ids["checkpoint"])
    os.truncate(weights, 1000)
    result = percontrast("eval", *MINIATURE, "checkpoint=latest", root=root, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    said = " ".join(result.stderr.split())  # rich wraps long lines outside a terminal
    assert f"latest checkpoint: passed over the newer {ids['checkpoint']}" in said
    assert "has 1000 bytes, the manifest says" in said
    assert weights.stat().st_size == 1000  # reported, not touched


def private_mounts(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """`script` (bash) in a private mount namespace, as root of a new user namespace when not root."""
    command = (
        ["unshare", "-m", "bash", "-c", script]
        if os.geteuid() == 0
        else ["unshare", "-rm", "bash", "-c", script]
    )
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=1800)


@pytest.fixture(scope="module")
def can_mount(tmp_path_factory):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    probe = tmp_path_factory.mktemp("mount")
    result = private_mounts(f"mount -t tmpfs -o size=1m tmpfs {probe} && mount --bind {probe} {probe}", probe)
    if result.returncode != 0:
        pytest.skip(f"private mounts not allowed here: {result.stderr.strip()}")


def cli_line(name: str, *args) -> str:
    """One CLI call of a mount script: output in <name>.out / <name>.err, `<name> <exit code>` printed."""
    return " ".join(
        ['"$PYTHON" -m percontrast_cli.cli', *args, f'> {name}.out 2> {name}.err; echo "{name} $?"']
    )


@pytest.mark.slow
@pytest.mark.xdist_group("finished_store")  # one worker builds the module's finished store
def test_a_read_only_store_serves_skips_and_reads_and_refuses_writes_in_one_line(store, tmp_path, can_mount):
    """A read-only store failed even the skips (Hydra's run dir under it); a write was a 33-line traceback."""
    root, ids = store
    before = tree(root)
    result = private_mounts(
        f"""
        mount --bind {root} {root} && mount -o remount,bind,ro {root} || exit 99
        export PERCONTRAST_OUTPUTS={root}
        {cli_line("run", "run", *MINIATURE)}
        {cli_line("eval", "eval", *MINIATURE, f"checkpoint={ids['checkpoint']}")}
        {cli_line("new", "eval", *MINIATURE, "eval.limit=1", "checkpoint=latest")}
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    codes = dict(line.split() for line in result.stdout.splitlines())
    run_err = (tmp_path / "run.err").read_text()
    assert codes["run"] == "0" and "skip eval" in run_err, run_err[-3000:]
    assert not re.search(r"^(built|trained|estimated) ", run_err, re.M)  # every stage reused
    assert (
        "cannot be written (Read-only file system): only artifacts that already exist can be used" in run_err
    )
    assert codes["eval"] == "0", (tmp_path / "eval.err").read_text()[-3000:]
    new_err = (tmp_path / "new.err").read_text()
    assert codes["new"] == "2" and "Traceback" not in new_err, new_err[-3000:]
    (line,) = errors(new_err)
    assert (
        "cannot write eval artifact" in line
        and f"{root / 'artifacts' / 'eval'}: Read-only file system" in line
    )
    assert tree(root) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("size", "overrides", "where"),
    [
        # a small disk: full before a stage (the store's check) or inside the training's checkpoint writes
        # (torch's errno-less "unexpected pos", recognised by the full disk)
        ("1300k", (), "No space left on device"),
        # a real failed write of an artifact: the model's weights do not fit (safetensors' `os error 28`)
        ("2m", ("model.hidden_size=256", "model.intermediate_size=512"), "cannot write model artifact"),
    ],
)
def test_a_full_disk_is_one_line_cleans_up_and_the_rerun_resumes(tmp_path, can_mount, size, overrides, where):
    """A full disk (a 1 MiB tmpfs) was a 53-line traceback without `No space left`."""
    disk = tmp_path / "disk"
    disk.mkdir()
    root = disk / "out"
    rerun = cli_line("rerun", "run", *MINIATURE) if not overrides else 'echo "rerun 0"'
    result = private_mounts(
        f"""
        mount -t tmpfs -o size={size} tmpfs {disk} || exit 99
        export PERCONTRAST_OUTPUTS={root}
        {cli_line("full", "run", *MINIATURE, *overrides)}
        find {disk} -name '.tmp-*' > leftovers.txt
        ls {root / "artifacts"} > kinds.txt
        mount -o remount,size=64m {disk}
        {rerun}
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    codes = dict(line.split() for line in result.stdout.splitlines())
    full_err = (tmp_path / "full.err").read_text()
    assert codes["full"] == "2" and "Traceback" not in full_err, full_err[-3000:]
    (line,) = errors(full_err)
    assert "No space left on device" in line and where in line and str(root) in line, line
    assert overrides == () or "(only" not in line  # the failed write itself, not the check before it
    assert "rerun the same command" in line
    assert (tmp_path / "leftovers.txt").read_text() == ""  # no half-written temp dir
    if not overrides:  # the stages that finished before the disk filled are kept and skipped
        rerun_err = (tmp_path / "rerun.err").read_text()
        assert codes["rerun"] == "0", rerun_err[-3000:]
        assert "skip model" in rerun_err


# The CLI, with training held at its first logged step >= STEP until a signal ends it, so the signal lands
# mid-training however loaded the machine is (the 16 tiny steps take well under a second).
PAUSED_CLI = """
import sys, time
from percontrast_cli.cli.main import main
from percontrast_cli.method.training_progress import RichProgressCallback
log, held_at = RichProgressCallback.on_log, int(sys.argv[1])
def on_log(self, args, state, control, logs=None, **kwargs):
    log(self, args, state, control, logs=logs, **kwargs)
    if state.global_step >= held_at:
        time.sleep(600)  # the signal's handler raises here, as it would anywhere in a training step
RichProgressCallback.on_log = on_log
main(sys.argv[2:])
"""


def stop_at(args, root, cwd, step, signum):
    """Start the CLI held at training step `step` (or the first logged one after it), send `signum`, wait."""
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CLI, str(step), *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
        env=env,
        # as in a terminal: an xdist worker ignores SIGINT, and an ignored signal stays ignored in a child
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines, sent = [], False
    for line in proc.stderr:
        lines.append(line)
        reached = re.search(r": step (\d+)/", line)
        if not sent and reached and int(reached.group(1)) >= step:
            proc.send_signal(signum)
            sent = True
    proc.wait(timeout=300)
    assert sent, "".join(lines)[-3000:]
    return proc.returncode, "".join(lines)


TRAIN = (*MINIATURE, "train.warmup_steps=0", "train.steps=16", "train.save_every=4", "train.log_every=1")


@pytest.mark.slow
def test_ctrl_c_and_sigterm_are_one_line_and_the_resume_is_exact(tmp_path):
    """Ctrl-C was a 75-line KeyboardInterrupt traceback; SIGTERM now ends the same way, with exit 143."""
    reference = percontrast("train", *TRAIN, root=tmp_path / "reference", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    root = tmp_path / "interrupted"
    for signum, step, code in ((signal.SIGTERM, 6, 143), (signal.SIGINT, 10, 130)):
        returncode, stderr = stop_at(("train", *TRAIN), root, tmp_path, step, signum)
        assert returncode == code and "Traceback" not in stderr, stderr[-3000:]
        last = stderr.strip().splitlines()[-1]
        assert re.fullmatch(
            r"percontrast: interrupted at step \d+ of 16 \(train perce\); rerun the same command to resume: "
            r"it continues from step \d+, its last saved checkpoint",
            last,
        ), last
        assert not list((root / "artifacts" / "checkpoint").glob(".tmp-*"))
    finished = percontrast("train", *TRAIN, root=root, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    [expected] = (tmp_path / "reference" / "artifacts" / "checkpoint").glob("*/model/model.safetensors")
    resumed = root / "artifacts" / "checkpoint" / expected.parent.parent.name / "model" / "model.safetensors"
    assert resumed.read_bytes() == expected.read_bytes()  # the same weights as without interruptions


@pytest.mark.slow
def test_ctrl_c_in_a_sweep_is_one_line_and_exit_130(tmp_path):
    """A `-m` sweep's Ctrl-C was a 130-line traceback."""
    args = ("train", "-m", "seed=0,1", *TRAIN[:-3], "train.steps=40", "train.log_every=1")
    returncode, stderr = stop_at(args, tmp_path / "out", tmp_path, 3, signal.SIGINT)
    assert returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert re.fullmatch(
        r"percontrast: interrupted at step \d+ of 40 \(train perce\); rerun the same command to resume: .*",
        stderr.strip().splitlines()[-1],
    )
