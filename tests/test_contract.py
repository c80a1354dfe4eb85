"""Nothing outside the contract (issue 33): no writes outside the outputs root, the cache and Hydra's run
dir whatever the environment; no process left when the launcher dies; bounded inputs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def percontrast(args, cwd, env, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "percontrast_cli.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        **kwargs,
    )


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
    result = percontrast(["run", "experiment=miniature"], cwd, env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HOME is not set: caches go under" in result.stderr
    assert sorted(os.listdir(cwd)) == ["outputs"]
    assert {"artifacts", "hydra", ".home"} >= set(os.listdir(cwd / "outputs")) >= {"artifacts", "hydra"}
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
