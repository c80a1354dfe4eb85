"""The GPU check that scripts/gpu_check.sh runs (see that file and docs/scaling.md): one Markdown table of

1. `run` (estimate -> train -> eval) on task=persona_email with the embedded SmolLM2 in bf16, CE and
   PerCE, full fine-tuning and LoRA: training time, peak GPU memory, batched generation tokens/s and the eval
   metrics;
2. training throughput on the same batches: this project's CE and PerCE steps against a plain HF Trainer
   (scripts/bench_train.py's contenders), tokens/s and peak GPU memory;
3. FSDP with one process (`distributed=fsdp distributed.num_processes=1`, accelerate launch): its loss curve
   against the single-process CE run's, and that its checkpoint loads with plain AutoModelForCausalLM.

    python scripts/gpu_check.py [--dry] [--out DIR] [--steps N]

``--dry``: on CPU, the tiny model and a few steps through the same code (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

sys.path.insert(0, str(Path(__file__).parent))  # bench_train's contenders

# Per run: (loss, peft, learning rate). Full fine-tuning of a pretrained model wants a far smaller step than
# LoRA's adapters (and than the tiny model trained from scratch).
RUNS = [("ce", "none", 5e-5), ("perce", "none", 5e-5), ("ce", "lora", 5e-4), ("perce", "lora", 5e-4)]
DRY_RUNS = [RUNS[0], RUNS[3]]  # --dry: both losses and both kinds of fine-tuning, in two runs
METRICS = ("rougeL", "personal_token_acc", "nonpersonal_token_acc", "token_loss", "estimator_auroc")


def overrides(dry: bool, steps: int) -> list[str]:
    if dry:  # the tiny model on a miniature persona task: seconds on a CPU
        return ["experiment=miniature", "task=persona_email", f"train.steps={steps}", "eval.meteor=false"]
    return [
        "model=smollm2",
        "task=persona_email",
        f"train.steps={steps}",
        "train.batch_size=16",
        "train.lr_warmup_steps=20",
        f"train.log_every={max(1, steps // 10)}",
        f"train.save_every={steps}",
        "estimator.batch_size=32",
        "eval.batch_size=32",
        "eval.meteor=false",  # WordNet is a Debian package the GPU machine lacks
    ]


def config(base: list[str], extra: list[str]):
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        return compose("config", overrides=[*base, *extra])


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def run_jobs(base: list[str], runs: list[tuple]) -> list[dict]:
    """Each run through the CLI's own `run` stage, in this process (artifacts shared: one base model)."""
    from percontrast_cli.cli.stages import STAGES

    rows = []
    for loss, peft, lr in runs:
        cfg = config(base, [f"loss={loss}", f"train.peft={peft}", f"train.lr={lr}"])
        reset_peak()
        started = time.perf_counter()
        result = STAGES["run"](cfg)
        seconds = time.perf_counter() - started
        metrics = result.manifest["metrics"]
        checkpoint = result.manifest["inputs"]["checkpoint"]
        history = json.loads(
            (Path(cfg.paths.artifacts) / "checkpoint" / checkpoint / "log_history.json").read_text()
        )
        final = next(h for h in reversed(history) if "train_runtime" in h)
        losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
        rows.append(
            {
                "run": f"{loss} {'LoRA' if peft == 'lora' else 'full'}",
                "checkpoint": checkpoint,
                "seconds": seconds,
                "train_s": final["train_runtime"],
                "steps_per_s": final["train_steps_per_second"],
                "peak_mib": peak_mib(),
                "final_loss": losses[-1][1] if losses else None,
                "losses": losses,
                "generation_tokens_per_s": metrics.get("generation_tokens_per_s"),
                **{name: metrics.get(name) for name in METRICS},
            }
        )
        print(f"gpu_check: run {rows[-1]['run']} done in {seconds:.0f} s", flush=True)
    return rows


def throughput(base: list[str], steps: int, warmup: int) -> list[dict]:
    """Step time on the same batches (same data order): ours CE, ours PerCE (online), a plain HF Trainer."""
    from transformers import PrinterCallback, Trainer

    from bench_train import StepTimer, right_padded
    from percontrast_cli.cli.tracking import NullTracker
    from percontrast_cli.method.losses import CE
    from percontrast_cli.method.trainer import fit, training_arguments
    from percontrast_cli.steps.context import Context, pick_device
    from percontrast_cli.steps.models import load_model
    from percontrast_cli.steps.task_data import encode_items, load_task
    from percontrast_cli.steps.training import starting_point
    from percontrast_cli.store.artifacts import ArtifactStore

    cfg = config(base, ["train.peft=none", "train.lr=5e-5"])
    ctx = Context(cfg, ArtifactStore(cfg.paths.artifacts), pick_device(cfg.device), NullTracker())
    device, bf16 = ctx.device, ctx.precision == "bfloat16"
    data = load_task(cfg)
    start = starting_point(ctx, data)
    _, tokenizer = load_model(ctx, start, with_model=False)
    items = encode_items(tokenizer, data.train, cfg, with_counterfactual=True)
    train_cfg = cfg.train.copy()
    train_cfg.log_every = train_cfg.save_every = 10**9
    tokens_per_step = statistics.mean(len(i["input_ids"]) for i in items) * train_cfg.batch_size
    rows = []
    for contender in ("ours_ce", "ours_perce", "hf_trainer"):
        model, _ = load_model(ctx, start, training=True)
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as work:
            reset_peak()
            if contender == "hf_trainer":
                plain = [{"input_ids": i["input_ids"], "labels": i["labels"]} for i in items]
                args = training_arguments(train_cfg, Path(work), steps + warmup, cfg.seed, device.type, bf16)
                trainer = Trainer(
                    model=model, args=args, train_dataset=plain,
                    data_collator=right_padded(tokenizer.pad_token_id), callbacks=[timer],
                )  # fmt: skip
                trainer.remove_callback(PrinterCallback)
                trainer.train()
            else:
                fit(
                    model, tokenizer, items, train_cfg=train_cfg,
                    loss_cfg=cfg.loss if contender == "ours_perce" else CE,
                    online_refresh=contender == "ours_perce", steps=steps + warmup, seed=cfg.seed,
                    work_dir=Path(work), device=device.type, tracker=NullTracker(), description=contender,
                    bf16=bf16, extra_callbacks=(timer,),
                )  # fmt: skip
        step = statistics.median(timer.times[warmup:])
        rows.append(
            {
                "contender": contender,
                "s_per_step": step,
                "tokens_per_s": tokens_per_step / step,
                "peak_mib": peak_mib(),
            }
        )
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        print(f"gpu_check: throughput {contender}: {step:.4f} s/step", flush=True)
    return rows


def fsdp_one_process(base: list[str], reference: dict, root: Path) -> dict:
    """The CE full fine-tuning run again under FSDP (one process, accelerate launch), in its own store."""
    from transformers import AutoModelForCausalLM

    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(root)}
    command = [
        sys.executable, "-m", "percontrast_cli.cli", "train", *base, "loss=ce", "train.peft=none",
        "train.lr=5e-5", "distributed=fsdp", "distributed.num_processes=1", f"hydra.run.dir={root}/job",
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        return {"ok": False, "seconds": seconds, "error": " ".join(result.stderr.strip().splitlines()[-1:])}
    if "(FSDP)" not in result.stdout + result.stderr:  # accelerate fell back to another parallelism
        return {"ok": False, "seconds": seconds, "error": "the run did not train under FSDP"}
    checkpoint = root / "artifacts" / "checkpoint" / reference["checkpoint"]
    history = json.loads((checkpoint / "log_history.json").read_text())
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    AutoModelForCausalLM.from_pretrained(checkpoint / "model")  # complete: loads without percontrast
    gap = max(abs(a - b) for (_, a), (_, b) in zip(losses, reference["losses"], strict=True))
    return {
        "ok": True,
        "seconds": seconds,
        "max_loss_gap": gap,
        "final_loss": losses[-1][1],
    }


def fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def table(runs: list[dict], speed: list[dict], fsdp: dict, device: str, steps: int) -> str:
    lines = [f"## GPU check ({device}, {steps} training steps, bf16 where the GPU supports it)", ""]
    lines += [
        "| run | train s | steps/s | peak MiB | generation tok/s | " + " | ".join(METRICS) + " |",
        "|---" * (5 + len(METRICS)) + "|",
    ]
    for r in runs:
        cells = [r["run"], fmt(r["train_s"], ".1f"), fmt(r["steps_per_s"], ".2f"), fmt(r["peak_mib"], ",.0f")]
        cells += [fmt(r["generation_tokens_per_s"], ",.0f"), *(fmt(r[m]) for m in METRICS)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| training step (same batches) | s/step | tokens/s | peak MiB |", "|---|---|---|---|"]
    for r in speed:
        peak = fmt(r["peak_mib"], ",.0f")
        lines.append(f"| {r['contender']} | {r['s_per_step']:.4f} | {r['tokens_per_s']:,.0f} | {peak} |")
    lines += ["", "| FSDP, 1 process (CE, full) | value |", "|---|---|"]
    if fsdp["ok"]:
        lines += [
            "| ran under FSDP, checkpoint loads | yes |",
            f"| wall time s (incl. launch) | {fsdp['seconds']:.0f} |",
            f"| max abs loss gap vs 1 process | {fsdp['max_loss_gap']:.2e} |",
        ]
    else:
        lines.append(f"| failed | {fsdp.get('error')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU, tiny model, a few steps (the test suite)")
    parser.add_argument(
        "--out", default=None, help="where gpu_check.md / .json go (default outputs/gpu_check)"
    )
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 200; dry 4)")
    args = parser.parse_args(argv)
    if not args.dry and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; on CPU use --dry")
    steps = args.steps or (4 if args.dry else 200)
    out = Path(args.out or "outputs/gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    # A store of its own (every run of the check starts from nothing); the converted SmolLM2 stays cached.
    root = Path(tempfile.mkdtemp(prefix="gpu_check-", dir=out))
    os.environ["PERCONTRAST_OUTPUTS"] = str(root / "main")
    base = overrides(args.dry, steps)
    if args.dry:
        base.append("device=cpu")
    started = time.perf_counter()
    runs = run_jobs(base, DRY_RUNS if args.dry else RUNS)
    speed = throughput(base, steps=max(steps, 4), warmup=1 if args.dry else 5)
    fsdp = fsdp_one_process(base, runs[0], root / "fsdp")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    text = table(runs, speed, fsdp, device, steps)
    text += f"\ntotal {time.perf_counter() - started:.0f} s\n"
    (out / "gpu_check.md").write_text(text)
    (out / "gpu_check.json").write_text(
        json.dumps({"runs": runs, "throughput": speed, "fsdp": fsdp}, indent=1)
    )
    print(text)
    if not fsdp["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
