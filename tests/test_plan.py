"""`percontrast plan`: the ids it names are the ids `run` makes, it touches nothing, and its times come from
measured calibrations (or say "unknown"); `calibrate` records them; sizes and calibrations as units."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from percontrast_cli.modeling.sizes import llama_like_parameters, parameter_count, training_memory
from percontrast_cli.modeling.tiny import build_tiny_model
from percontrast_cli.store import calibration
from tests.conftest import TINY

SWEEP = ["experiment=miniature", "loss=ce,perce"]


def cli(*args, root: Path, **env):
    return subprocess.run(
        [sys.executable, "-m", "percontrast_cli.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PERCONTRAST_OUTPUTS": str(root), "HF_HUB_OFFLINE": "1", **env},
        timeout=900,
    )


def snapshot(root: Path) -> dict:
    """Every file and directory under `root` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def rows(stdout: str, job: str) -> dict[str, list[str]]:
    """The plan table's rows of one job (`#n <its overrides>`): stage -> cells."""
    found, current = {}, None
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) < 9:
            continue
        if cells[0]:
            current = cells[0]
        if current is not None and current.endswith(job):
            found[cells[1]] = cells
    return found


def seconds(time: str) -> float:
    """A plan's time cell (`duration`'s `4.2 s`, `37 s`, `1.7 min`, `2.0 h`) in seconds."""
    number, unit = time.split()
    return float(number) * {"s": 1, "min": 60, "h": 3600}[unit]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A miniature sweep at seed 0, run once for the module."""
    root = tmp_path_factory.mktemp("plan") / "outputs"
    result = cli("run", "-m", *SWEEP, "seed=0", "hydra.sweep.dir=" + str(root / "sweep"), root=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_plan_after_a_run_finds_every_stage_by_the_runs_ids_and_estimates_the_rest(ran):
    root, _ = ran
    before = snapshot(root)
    result = cli("plan", "-m", *SWEEP, "seed=0,1", root=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(root) == before  # nothing written: not the store, not the calibrations, no Hydra dir
    for job_dir in sorted((root / "sweep").glob("[0-9]*")):
        made = json.loads((job_dir / "artifacts.json").read_text())
        overrides = (job_dir / ".hydra" / "overrides.yaml").read_text()
        loss = "perce" if "loss=perce" in overrides else "ce"
        planned = rows(result.stdout, f"loss={loss} seed=0")
        roles = {"model": "model", "warm-up": "start", "train": "checkpoint", "eval": "eval"}
        assert set(planned) == set(roles)
        for stage, role in roles.items():
            assert planned[stage][2] == made[role], (stage, planned[stage])
            assert planned[stage][3] == "found"
    for loss in ("ce", "perce"):
        planned = rows(result.stdout, f"loss={loss} seed=1")
        assert set(planned) == {"model", "warm-up", "train", "eval"}
        for cells in planned.values():
            assert cells[3] == "to compute"
            assert cells[7] != "unknown" and seconds(cells[7]) >= 0  # measured by the seed-0 run
            assert "(measured)" in cells[8]
    assert "shared between jobs" in result.stdout and "estimated time:" in result.stdout


def test_an_interrupted_training_is_planned_as_partly_done(ran):
    root, _ = ran
    args = ("plan", "experiment=miniature", "loss=ce", "seed=0", "train.steps=200")
    train = rows(cli(*args, root=root).stdout, "train.steps=200")["train"]
    assert train[3] == "to compute" and train[2] != "(new)"  # its start exists: its id is known
    work = root / "artifacts" / ".work" / f"checkpoint-{train[2]}"
    (work / "checkpoint-100").mkdir(parents=True)
    (work / "checkpoint-100" / "trainer_state.json").write_text("{}")
    try:
        again = rows(cli(*args, root=root).stdout, "train.steps=200")["train"]
    finally:
        shutil.rmtree(work)
    assert again[3] == "partly done (resumable from step 100)"
    assert seconds(again[7]) < seconds(train[7])  # 100 steps left of 200


def test_plan_lists_a_learning_curves_points_by_the_ids_the_run_records(ran, tmp_path):
    """eval.at_steps: plan names the checkpoint saved at each point and each point's eval (@0: the start's) by
    the ids the run then records in its curve. The run's end exists already (the fixture's), so the points
    mean training again up to the last one: planned as that point's work, and said."""
    root = tmp_path / "outputs"  # a copy: the module's other tests read the fixture's store as it was
    shutil.copytree(ran[0], root)
    args = ("experiment=miniature", "loss=ce", "seed=0", "eval.at_steps=[0,2]")
    planned = cli("plan", *args, root=root)
    assert planned.returncode == 0, planned.stderr[-3000:]
    before = rows(planned.stdout, "eval.at_steps=[0,2]")
    assert list(before) == ["model", "warm-up", "train", "point 2", "eval @0", "eval @2", "eval"]
    assert before["train"][3] == before["eval"][3] == "found"
    assert all(before[stage][3] == "to compute" for stage in ("point 2", "eval @0", "eval @2"))
    assert before["point 2"][4] == "2" and "trains again up to step 2" in planned.stdout
    assert before["point 2"][7] not in ("in train", "-")  # its own work: the training again
    fresh = cli("plan", "experiment=miniature", "loss=ce", "seed=1", "eval.at_steps=[2]", root=root)
    assert rows(fresh.stdout, "eval.at_steps=[2]")["point 2"][7] == "in train"  # saved on the way
    job = root / "curve_job"
    result = cli("run", *args, f"hydra.run.dir={job}", root=root)
    assert result.returncode == 0, result.stderr[-3000:]
    curve = json.loads((job / "artifacts.json").read_text())["curve"]
    after = rows(cli("plan", *args, root=root).stdout, "eval.at_steps=[0,2]")
    assert after["eval @0"][2] == before["eval @0"][2] == curve["0"]
    assert after["eval @2"][2] == before["eval @2"][2] == curve["2"]
    assert after["point 2"][2] == before["point 2"][2]
    assert all(cells[3] == "found" for cells in after.values())
    too_far = cli("plan", "experiment=miniature", "eval.at_steps=[9]", root=root)
    assert too_far.returncode != 0 and "step 9 is past the training's end (4 optimiser" in too_far.stderr


def test_a_run_shows_plans_estimate_against_the_actual_time(ran):
    _, result = ran
    assert "time: plan's estimate vs actual" in result.stdout
    assert "unknown" in result.stdout  # the first job had no calibration yet: it says so, not a guess


def test_calibrations_are_recorded_from_the_run(ran):
    root, _ = ran
    records = calibration.load(root / "calibration.jsonl")
    works = {r.key.work for r in records}
    assert {"model", "train:ce", "train:online", "score:contrast", "generate", "startup"} <= works
    assert all(r.seconds_per_unit > 0 and r.key.model.startswith("tiny ") for r in records)
    manifest = json.loads(next((root / "artifacts" / "checkpoint").glob("*/manifest.json")).read_text())
    assert manifest["timing"]["seconds"] > 0 and manifest["timing"]["work"][0]["units"] == 4


def test_calibrate_keeps_only_its_records(tmp_path):
    root = tmp_path / "outputs"
    result = cli("calibrate", "experiment=miniature", root=root)
    assert result.returncode == 0, result.stderr[-3000:]
    sources = {r.source.split()[0] for r in calibration.load(root / "calibration.jsonl")}
    assert sources == {"calibrate"}
    assert not list((root / "artifacts").rglob("manifest.json"))  # its store was temporary
    assert "report:" not in result.stdout  # nothing left to report on
    planned = rows(cli("plan", "experiment=miniature", root=root).stdout, "experiment=miniature")
    assert all(cells[7] != "unknown" for cells in planned.values())


def test_plan_without_calibration_says_unknown_and_how_to_calibrate(tmp_path):
    root = tmp_path / "outputs"
    result = cli("plan", "experiment=miniature", "task=persona_email", root=root)
    assert result.returncode == 0, result.stderr
    assert "unknown: no calibration for tiny" in result.stdout
    assert "percontrast calibrate experiment=miniature task=persona_email" in result.stdout
    assert not root.exists() or not any(root.rglob("*"))


def test_plan_of_the_paper_preset_works_from_the_config_alone(tmp_path):
    root = tmp_path / "outputs"
    result = cli("plan", "experiment=paper", "task=review", root=root)
    assert result.returncode == 0, result.stderr
    planned = rows(result.stdout, "task=review")
    assert set(planned) == {"model", "train", "eval"}  # pretrained: no warm-up; online PerCE: no estimate
    assert all(cells[7] == "unknown" for cells in planned.values())
    assert "GiB (estimate)" in planned["train"][8]
    assert "tokenizer unavailable" in result.stdout or "data unavailable" in result.stdout


def test_a_sweep_without_m_is_refused(tmp_path):
    result = cli("plan", "loss=ce,perce", root=tmp_path)
    assert result.returncode == 2 and "add -m" in result.stderr


def test_parameter_count_of_the_tiny_model_matches_the_built_model(tokenizer):
    model = build_tiny_model(TINY, tokenizer, seed=0)
    config = {
        "hidden_size": TINY.hidden_size,
        "num_hidden_layers": TINY.num_layers,
        "vocab_size": len(tokenizer),
        "intermediate_size": TINY.intermediate_size,
        "num_attention_heads": TINY.num_heads,
        "tie_word_embeddings": True,
    }
    assert llama_like_parameters(config) == sum(p.numel() for p in model.parameters())


def test_parameter_count_from_the_name_says_so():
    size = parameter_count({"source": "hub", "name_or_path": "nobody/Some-Model-1.5B-Instruct"})
    assert size.parameters == 1_500_000_000 and "name" in size.how
    assert training_memory(10**9, "float32", None).bytes == 16 * 10**9
    assert training_memory(10**9, "float32", 8).bytes < 5 * 10**9
    assert training_memory(10**9, "float32", None, "fsdp", 8).bytes == 2 * 10**9  # all of it sharded
    assert training_memory(10**9, "float32", None, "deepspeed_zero2", 4).bytes == 7 * 10**9  # 4 + 12/4
    assert training_memory(10**9, "float32", None, "ddp", 4).bytes == 16 * 10**9


def record(work="train:ce", bucket=256, seconds=1.0, overhead=0.0, age=0.0, device="cpu x2"):
    key = calibration.Key("tiny 53.4K", device, "float32", bucket, work)
    return calibration.Record(key, seconds, 4, overhead, 100.0, "process RSS", "run", time.time() - age)


def test_nearest_calibration_is_the_mean_at_the_closest_bucket_of_the_same_device():
    asked = record(bucket=512).key
    records = [
        record(bucket=256, seconds=1.0),
        record(bucket=256, seconds=3.0, overhead=2.0),
        record(bucket=4096, seconds=50.0),
        record(device="cuda H200", bucket=512, seconds=0.01),
    ]
    chosen = calibration.nearest(records, asked)
    assert chosen.seconds_per_unit == 2.0 and chosen.overhead_seconds == 1.0
    assert "length bucket 256 for 512" in calibration.describe(chosen, asked)
    assert calibration.nearest(records, record(work="generate").key) is None


def test_a_cpu_calibration_is_keyed_by_the_cpu_model(monkeypatch):
    """A step takes other seconds on another CPU: a Xeon's measurements do not estimate an EPYC's steps."""
    import torch

    from percontrast_cli.runtime import machine
    from percontrast_cli.steps import costs

    monkeypatch.setattr(machine, "cpu_description", lambda: "Intel Xeon Gold; bf16: fast (amx_bf16)")
    xeon = costs.device_label(torch.device("cpu"))
    monkeypatch.setattr(machine, "cpu_description", lambda: "AMD EPYC; bf16: fast (avx512_bf16)")
    epyc = costs.device_label(torch.device("cpu"))
    assert xeon == f"cpu x{torch.get_num_threads()} Intel Xeon Gold" and epyc.endswith(" AMD EPYC")
    assert calibration.nearest([record(device=xeon)], record(device=epyc).key) is None
    assert calibration.nearest([record(device=epyc)], record(device=epyc).key) is not None


def test_unreadable_calibration_lines_are_skipped(tmp_path):
    path = tmp_path / "calibration.jsonl"
    calibration.append(path, [record()])
    with open(path, "a") as f:
        f.write('{"key": {"model": "cut sho')
    assert len(calibration.load(path)) == 1
