"""scripts/gpu_check.sh --dry: the GPU check's code end to end on CPU (tiny model, a few steps)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("main_process_port")  # its FSDP launch uses port 29500 too


@pytest.mark.slow
def test_gpu_check_dry_run_prints_the_whole_table(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PERCONTRAST_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert table in result.stdout  # printed as written
    for row in ("| ce full |", "| perce LoRA |"):  # --dry's two runs (the GPU check has all four)
        assert row in table
    for contender in ("| ours_ce |", "| ours_perce |", "| hf_trainer |"):
        assert contender in table
    assert "| ran under FSDP, checkpoint loads | yes |" in table
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert all(run["generation_tokens_per_s"] > 0 for run in report["runs"])
    assert all(row["tokens_per_s"] > 0 for row in report["throughput"])
    # FSDP with one process trains what one process trains
    assert report["fsdp"]["max_loss_gap"] < 1e-4
