"""Training throughput and peak memory of CE vs PerCE (online refresh) on the same data and model.

    python scripts/bench_train.py [steps=40] [hydra overrides, e.g. model.hidden_size=256 train.batch_size=8]

Each loss runs in its own child process (so peak memory is its own): the same tiny model and tokenizer,
the same batches. Prints tokens/s, seconds per step, peak memory, and the PerCE/CE time ratio.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from transformers import TrainerCallback

from percontrast_cli import pipeline
from percontrast_cli.artifacts import ArtifactStore
from percontrast_cli.losses import is_weighted
from percontrast_cli.modeling.load import load_model_and_tokenizer
from percontrast_cli.stages import quiet_libraries
from percontrast_cli.tracking import NullTracker
from percontrast_cli.train import fit

WARMUP_STEPS = 5  # first steps (allocation, lazy init) are not timed


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.start)


def run_one(loss_name: str, overrides: list[str], steps: int, base_dir: str, queue) -> None:
    quiet_libraries()
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"loss={loss_name}", *overrides])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    store = ArtifactStore(base_dir)
    data = pipeline.load_task(cfg)
    ctx = pipeline.Context(cfg, store, device, NullTracker())
    base = pipeline.base_model(ctx, data)
    model, tokenizer = load_model_and_tokenizer(base.path / "model")
    online = is_weighted(cfg.loss)
    items = pipeline.encode_items(tokenizer, data.train, cfg, with_counterfactual=online)
    timer = StepTimer()
    fit(
        model,
        tokenizer,
        items,
        train_cfg=cfg.train,
        loss_cfg=cfg.loss,
        online_refresh=online,
        steps=steps + WARMUP_STEPS,
        seed=cfg.seed,
        work_dir=Path(base_dir) / f"work-{loss_name}",
        device=device.type,
        tracker=NullTracker(),
        description=f"bench {loss_name}",
        extra_callbacks=(timer,),
    )
    timed = timer.times[WARMUP_STEPS:]
    tokens_per_step = (
        cfg.train.batch_size * cfg.train.grad_accum * sum(len(i["input_ids"]) for i in items) / len(items)
    )
    peak = (
        torch.cuda.max_memory_allocated()
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    queue.put(
        {
            "loss": loss_name,
            "sec_per_step": sum(timed) / len(timed),
            "tokens_per_s": tokens_per_step * len(timed) / sum(timed),
            "peak_bytes": peak,
            "device": str(device),
        }
    )


def main(argv: list[str]) -> None:
    steps = 40
    overrides = []
    for arg in argv:
        if arg.startswith("steps="):
            steps = int(arg.split("=", 1)[1])
        else:
            overrides.append(arg)
    overrides = ["train.save_every=100000", "train.log_every=100000", *overrides]
    results = []
    with tempfile.TemporaryDirectory() as base_dir:
        ctx = mp.get_context("spawn")
        for loss_name in ("ce", "perce"):
            queue = ctx.Queue()
            proc = ctx.Process(target=run_one, args=(loss_name, overrides, steps, base_dir, queue))
            proc.start()
            results.append(queue.get())
            proc.join()
    print(f"device {results[0]['device']}, {steps} timed steps (peak: RSS on CPU, allocated on GPU)")
    print(f"{'loss':<6} {'s/step':>8} {'tokens/s':>10} {'peak MiB':>9}")
    for r in results:
        mib = r["peak_bytes"] / 2**20
        print(f"{r['loss']:<6} {r['sec_per_step']:>8.4f} {r['tokens_per_s']:>10.0f} {mib:>9.0f}")
    ratio = results[1]["sec_per_step"] / results[0]["sec_per_step"]
    print(f"PerCE/CE time per step: {ratio:.3f}x (target <= 1.4x)")


if __name__ == "__main__":
    main(sys.argv[1:])
