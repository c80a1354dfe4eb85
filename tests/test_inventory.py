"""`percontrast ls` and `percontrast env`: what they list comes from the configs and the store, and neither
imports torch (they must answer in well under the 3 s a torch import alone nearly takes)."""

import json
import os
import subprocess
import sys
import time

import pytest

from percontrast_cli.cli import inventory
from percontrast_cli.runtime import machine
from percontrast_cli.store.artifacts import ArtifactStore


def cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "percontrast_cli.cli", *args], capture_output=True, text=True, env=env
    )


def without_torch(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter and fail if it imported torch."""
    check = f"{code}\nimport sys\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    return subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)


def test_ls_lists_every_preset_with_its_first_comment_and_every_model_loss_and_task():
    result = cli("ls")
    assert result.returncode == 0, result.stderr
    for group in ("experiment", "task", "model", "loss"):
        for path in inventory.options(group):
            assert path.stem in result.stdout
    miniature = inventory.conf_dir() / "experiment" / "miniature.yaml"
    comment = inventory.first_comment(miniature)
    assert not comment.startswith("@package") and comment[:40] in result.stdout
    qwen3 = next(line for line in result.stdout.splitlines() if " qwen3 " in line)
    assert "4B" in qwen3 and "Qwen/Qwen3-4B" in qwen3  # size from the name, weights from the hub


def test_ls_and_env_do_not_import_torch():
    for command in ("ls",), ("ls", "models"), ("env",):
        result = without_torch(f"from percontrast_cli.cli.main import main\nmain({list(command)!r})")
        assert result.returncode == 0, result.stderr


def test_an_unknown_ls_section_is_one_line_and_exit_2():
    result = cli("ls", "modles")
    assert result.returncode == 2
    assert "unknown section 'modles'" in result.stderr and "artifacts" in result.stderr


def fake_artifact(store, kind, artifact_id, loss, task, payload=b"x" * 2048):
    run_config = {"model": {"name": "tiny"}, "task": {"name": task}, "loss": {"name": loss}, "seed": 0}
    config = {"steps": 4} if kind == "checkpoint" else {}
    with store.create(kind, artifact_id, config, {}, run_config=run_config, tag=loss, train_task=task) as (
        tmp,
        _,
    ):
        (tmp / "weights.bin").write_bytes(payload)


def test_ls_artifacts_filters_by_overrides_and_shows_size_and_age(tmp_path):
    store = ArtifactStore(tmp_path / "outputs" / "artifacts")
    fake_artifact(store, "checkpoint", "aaaaaaaaaaaa", "perce", "persona_email")
    fake_artifact(store, "checkpoint", "bbbbbbbbbbbb", "ce", "persona_email")
    fake_artifact(store, "checkpoint", "cccccccccccc", "perce", "synthetic_email")
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(tmp_path / "outputs")}
    every = cli("ls", "artifacts", env=env)
    assert every.returncode == 0, every.stderr
    assert all(i * 12 in every.stdout for i in "abc")
    assert "2 KiB" in every.stdout and "checkpoint" in every.stdout
    chosen = cli("ls", "artifacts", "loss=perce", "task=persona_email", env=env)
    assert "aaaaaaaaaaaa" in chosen.stdout
    assert "bbbbbbbbbbbb" not in chosen.stdout and "cccccccccccc" not in chosen.stdout
    none = cli("ls", "artifacts", "seed=1", env=env)
    assert "no artifacts match seed=1" in none.stdout
    preset = cli("ls", "artifacts", "experiment=miniature", env=env)
    assert preset.returncode == 2 and "experiment= is a preset" in preset.stderr


def test_artifact_age_reads_the_manifest_time(tmp_path):
    store = ArtifactStore(tmp_path)
    fake_artifact(store, "eval", "dddddddddddd", "ce", "persona_email")
    manifest_path = tmp_path / "eval" / "dddddddddddd" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["created"] = time.time() - 3 * 3600
    manifest_path.write_text(json.dumps(manifest))
    (row,) = inventory.artifact_rows(tmp_path, {})
    assert row[-1] == "3 h" and "task=persona_email" in row[3]


def test_env_is_one_block_with_what_a_bug_report_needs():
    result = cli("env")
    assert result.returncode == 0, result.stderr
    for label in ("percontrast", "python", "torch build", "cpu", "gpu", "threads", "store", "wordnet"):
        assert any(line.startswith(label) for line in result.stdout.splitlines()), label
    assert "HF_HUB_OFFLINE=" in result.stdout and "transformers " in result.stdout
    assert "\n\n" not in result.stdout.strip()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("fpu sse avx512f avx512_bf16", "bf16: fast (avx512_bf16)"), ("fpu amx_bf16 amx_tile", "amx_bf16"),
     ("fpu sse avx2", "bf16: slow")],
)  # fmt: skip
def test_env_reads_the_cpus_bf16_instructions(flags, expected):
    info = f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n"
    assert expected in machine.cpu_description(info)
    assert machine.cpu_description(info).startswith("Some CPU")
