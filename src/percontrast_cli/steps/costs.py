"""What a stage cost: its wall time and peak memory, and the calibration records `percontrast plan` estimates
from (store/calibration.py). A build names the work it did in ``manifest["work"]`` (kind, units, loop
seconds); `produce` times the whole build around it and records both."""

from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from percontrast_cli.modeling.sizes import human_count, parameter_count
from percontrast_cli.runtime import machine
from percontrast_cli.runtime.progress import warn
from percontrast_cli.store import calibration


def device_label(device: torch.device) -> str:
    """The device as calibrations key it: the GPU's name, or the CPU's model with the threads torch computes
    on (a CPU step time scales with them, and differs between CPUs: an AMD EPYC took 1.26x a Xeon's seconds
    for the same SmolLM2 LoRA training, so one's measurements do not estimate the other's)."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return f"cpu x{torch.get_num_threads()} {machine.cpu_model(machine.cpu_description())}"


def model_label(model_cfg) -> str:
    """The model as calibrations key it: its name and size (a tiny model at another width is another)."""
    return f"{model_cfg.name} {human_count(parameter_count(model_cfg).parameters)}"


def calibration_key(cfg, device: torch.device, precision: str, work: str) -> calibration.Key:
    """Keyed by the `distributed=` layout too: N processes take another time per step than one."""
    bucket = calibration.bucket(cfg.model.max_length)
    layout, where = cfg.distributed.name, device_label(device)
    if layout != "none":
        where += f", {layout} x{cfg.distributed.num_processes}"
    return calibration.Key(model_label(cfg.model), where, precision, bucket, work)


def process_age() -> float | None:
    """Seconds since this process started (Linux's /proc; None elsewhere)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time, in clock ticks
    except (OSError, ValueError, IndexError):
        return None


def record_startup(ctx) -> None:
    """Once per process, before its first build: how long starting it took (imports, composing the
    configs), which a sweep pays once and `plan` adds once."""
    global _startup_recorded
    if _startup_recorded:
        return
    _startup_recorded = True
    if (seconds := process_age()) is not None:
        spent = {"overhead_seconds": 0.0, "work": [work_entry("startup", 1, seconds)]}
        record(ctx, "process", "start", spent)


def work_entry(work: str, units: float, seconds: float, **extra) -> dict:
    """One kind of work a build did: `units` of it in `seconds` of its loop."""
    return {"work": work, "units": float(units), "seconds": float(seconds), **extra}


def scoring_work(records, seconds: float, contrast: bool) -> dict:
    """A teacher-forced pass's time per scored target token (with or without the counterfactual pass)."""
    tokens = sum(len(r.logp) for r in records)  # `scores` needs the counterfactual pass: a reference has none
    return work_entry(
        "score:contrast" if contrast else "score:factual",
        tokens,
        seconds,
        tokens_per_example=tokens / max(1, len(records)),
    )


_startup_recorded = False
SOURCE = "run"  # what made the records: a run, or `percontrast calibrate`
_depth = 0  # builds being measured in this process (nested: a round's estimate inside a training)


@contextmanager
def measured(device: torch.device):
    """Times the block and takes its peak memory: CUDA's peak allocation on a GPU (reset at the start), the
    process's peak resident size on a CPU (the whole process so far: it never goes down)."""
    global _depth
    cuda = device.type == "cuda"
    if cuda and _depth == 0:  # a build inside a build (a round's estimate in a training) keeps the outer peak
        torch.cuda.reset_peak_memory_stats(device)
    result: dict = {}
    started = time.perf_counter()
    _depth += 1
    try:
        yield result
    finally:
        _depth -= 1
    result["seconds"] = time.perf_counter() - started
    if cuda:
        result.update(peak_memory_bytes=torch.cuda.max_memory_allocated(device), memory="cuda allocated")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        result.update(peak_memory_bytes=peak, memory="process RSS")


def timing(measure: dict, work: list[dict]) -> dict:
    """The manifest's `timing`: the whole build, its peak memory, and the work in it."""
    loops = sum(entry["seconds"] for entry in work)
    return {**measure, "overhead_seconds": max(0.0, measure["seconds"] - loops), "work": work}


def record(ctx, kind: str, artifact_id: str, spent: dict) -> None:
    """One calibration record per kind of work of a build (the stage's overhead on the first); a store
    that cannot take them costs a warning, never the run."""
    if not spent["work"] or not ctx.cfg.paths.get("calibration"):
        return
    records = []
    for number, entry in enumerate(spent["work"]):
        units = entry["units"]
        if units <= 0:
            continue
        records.append(
            calibration.Record(
                key=calibration_key(ctx.cfg, ctx.device, ctx.precision, entry["work"]),
                seconds_per_unit=entry["seconds"] / units,
                units=units,
                overhead_seconds=spent["overhead_seconds"] if number == 0 else 0.0,
                peak_memory_bytes=spent.get("peak_memory_bytes"),
                memory=spent.get("memory", ""),
                source=f"{SOURCE} {kind} {artifact_id}",
                extra={k: v for k, v in entry.items() if k not in ("work", "units", "seconds")},
            )
        )
    try:
        calibration.append(Path(str(ctx.cfg.paths.calibration)), records)
    except OSError as exc:
        warn(f"calibration not recorded ({ctx.cfg.paths.calibration}: {exc.strerror}); plan will not use it")
