"""Training step time, throughput and peak memory: this project's CE and PerCE against the trainers users
would pick instead, on the same model, data and batches.

    python scripts/bench_train.py [shape=tiny|longlamp|longlamp_lora|all] [steps=60] [repeats=3] [warmup=5]
                                  [contenders=ours_ce,ours_ce_full_logits,...]
    make bench

Contenders (each run in its own child process, so its peak memory is its own; the contenders take turns in
every repeat, and the table reports medians over repeats of the per-run median step time):

- ``ours_ce``, ``ours_perce``: this project's Trainer (logits only on the label tail; PerCE with online
  refresh: one extra no-grad forward on the counterfactual sequence);
- ``ours_ce_full_logits``: the same CE computed the way this project did before target-only logits
  (right-padded batches, full-vocabulary logits at every position, copied to fp32): the "today" reference;
- ``hf_trainer``: a plain ``transformers.Trainer`` with the model's own loss (labels on the target only);
- ``trl_sft``: TRL's ``SFTTrainer`` with a completion-only loss (``pip install trl``; skipped without it).

Shapes: ``tiny`` (the default tiny model, synthetic_email, batch 16), ``longlamp`` (the embedded
SmolLM2-135M, prompts of ~1,500 tokens of retrieved profile items, targets of ~300 tokens, batch 1 on CPU,
full fine-tuning) and ``longlamp_lora`` (the same sequences, batch 4, LoRA, gradient checkpointing).
Peak memory: resident set size of the child process on CPU, peak allocated memory on a GPU. On CPU the
children run with glibc's mmap threshold pinned (``MALLOC_MMAP_THRESHOLD_``): large tensors are then always
mapped and unmapped, so a freed tensor leaves the resident set and the peak RSS is the peak of live memory
(with glibc's default, adaptive threshold, freed blocks stay in the heap and the RSS only ever grows).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from transformers import Trainer, TrainerCallback

CONTENDERS = ("ours_ce", "ours_perce", "ours_ce_full_logits", "hf_trainer", "trl_sft")
SHAPES = {
    "tiny": {"overrides": ["train.batch_size=16"], "steps": 60},
    "longlamp": {"overrides": ["model=smollm2", "train.batch_size=1", "model.max_length=2048"], "steps": 3},
    # The same sequences as LoRA users train them: batch 4, activations recomputed in the backward pass, so
    # what is left of the memory is the model, the checkpointed layer inputs and the logits.
    "longlamp_lora": {
        "overrides": [
            "model=smollm2",
            "train.batch_size=4",
            "model.max_length=2048",
            "train.peft=lora",
            "train.gradient_checkpointing=true",
        ],
        "steps": 2,
    },
}


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.start)


def compose_config(overrides: list[str]):
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        return compose("config", overrides=overrides)


def longlamp_examples(n: int, seed: int = 0):
    """Examples shaped like LongLaMP review writing: 15 profile items of ~75 words, a ~230-word target."""
    from percontrast_cli.data.schema import Example

    rng = random.Random(seed)
    words = (
        "the a product quality price works well after week battery sound light heavy fits size colour "
        "delivery box setup easy hard return service would buy again recommend kitchen garden travel "
        "music phone camera screen cable charger shoes jacket coffee kettle lamp chair desk bag"
    ).split()

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k)).capitalize() + "."

    return [
        Example(
            id=f"ex{i}",
            user_id=f"u{i}",
            input=f"Write the review for product {i}: {text(20)}",
            output=text(230),
            profile=tuple(text(75) for _ in range(15)),
        )
        for i in range(n)
    ]


def prepare(shape: str, work: Path) -> None:
    """Builds the shape's model directory and encoded items once, so every contender gets identical ones."""
    from percontrast_cli.cli.tracking import NullTracker
    from percontrast_cli.steps import context, models, task_data
    from percontrast_cli.store.artifacts import ArtifactStore

    cfg = compose_config([*SHAPES[shape]["overrides"], "retrieval.k=15"])
    ctx = context.Context(cfg, ArtifactStore(work / "store"), torch.device("cpu"), NullTracker())
    if shape.startswith("longlamp"):
        examples = longlamp_examples(16)
        data = task_data.TaskData(examples, examples)
    else:
        data = task_data.load_task(cfg)
    model, tokenizer = models.load_model(ctx, models.base_model(ctx, data), training=True)
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    items = task_data.encode_items(tokenizer, data.train, cfg, with_counterfactual=True)
    (work / "items.json").write_text(json.dumps([{k: v for k, v in i.items() if k != "cut"} for i in items]))


def right_padded(pad_id: int):
    """A plain collator: right padding, labels on the target only (what the HF Trainer path uses)."""

    def collate(rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        pad = [width - len(r["input_ids"]) for r in rows]
        return {
            "input_ids": torch.tensor(
                [r["input_ids"] + [pad_id] * p for r, p in zip(rows, pad, strict=True)]
            ),
            "labels": torch.tensor([r["labels"] + [-100] * p for r, p in zip(rows, pad, strict=True)]),
            "attention_mask": torch.tensor(
                [[1] * len(r["input_ids"]) + [0] * p for r, p in zip(rows, pad, strict=True)]
            ),
        }

    return collate


def run_one(contender: str, shape: str, work: str, steps: int, warmup: int, queue) -> None:
    from percontrast_cli.cli.stages import quiet_libraries
    from percontrast_cli.cli.tracking import NullTracker
    from percontrast_cli.method.losses import CE, token_nll, weighted_nll
    from percontrast_cli.method.trainer import PerCETrainer, fit, training_arguments
    from percontrast_cli.modeling.load import load_model_and_tokenizer
    from percontrast_cli.modeling.lora import wrap_lora

    quiet_libraries()
    cfg = compose_config(SHAPES[shape]["overrides"])
    train_cfg = cfg.train.copy()
    train_cfg.log_every = train_cfg.save_every = 10**9
    work_dir = Path(work)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model_and_tokenizer(work_dir / "model")
    if train_cfg.peft == "lora":
        torch.manual_seed(0)  # the same adapters for every contender
        model = wrap_lora(model, train_cfg.lora)
    items = json.loads((work_dir / "items.json").read_text())
    timer = StepTimer()
    total = steps + warmup
    run_dir = work_dir / f"run-{contender}-{time.time_ns()}"  # fresh: a leftover checkpoint would be resumed
    args = training_arguments(train_cfg, run_dir, total, 0, device)
    plain = [{"input_ids": i["input_ids"], "labels": i["labels"]} for i in items]

    if contender in ("ours_ce", "ours_perce"):
        loss_cfg = (
            compose_config([*SHAPES[shape]["overrides"], "loss=perce"]).loss
            if contender == "ours_perce"
            else CE
        )
        fit(
            model, tokenizer, items, train_cfg=train_cfg, loss_cfg=loss_cfg,
            online_refresh=contender == "ours_perce", steps=total, seed=0,
            work_dir=run_dir, device=device, tracker=NullTracker(),
            description=contender, extra_callbacks=(timer,),
        )  # fmt: skip
    elif contender == "ours_ce_full_logits":

        class FullLogits(PerCETrainer):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
                return weighted_nll(
                    token_nll(logits, inputs["labels"]), inputs["labels"], None, num_items_in_batch
                )

        trainer = FullLogits(
            model=model, args=args, train_dataset=plain, data_collator=right_padded(tokenizer.pad_token_id),
            loss_cfg=CE, online_refresh=False, callbacks=[timer],
        )  # fmt: skip
        trainer.train()
    elif contender == "hf_trainer":
        trainer = Trainer(
            model=model, args=args, train_dataset=plain, data_collator=right_padded(tokenizer.pad_token_id),
            callbacks=[timer],
        )  # fmt: skip
        trainer.train()
    else:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        rows = [
            {"input_ids": i["input_ids"], "completion_mask": [int(x != -100) for x in i["labels"]]}
            for i in items
        ]
        shared = {k: v for k, v in args.to_dict().items() if k in SFTConfig.__dataclass_fields__}
        sft_args = SFTConfig(**shared, completion_only_loss=True, max_length=None, packing=False)
        trainer = SFTTrainer(
            model=model, args=sft_args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
            callbacks=[timer],
        )  # fmt: skip
        trainer.train()

    timed = timer.times[warmup:]
    tokens = statistics.mean(len(i["input_ids"]) for i in items) * train_cfg.batch_size * train_cfg.grad_accum
    peak = (
        torch.cuda.max_memory_allocated()
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    step = statistics.median(timed)
    queue.put({"contender": contender, "s_per_step": step, "tokens_per_s": tokens / step, "peak": peak})


def trl_available() -> bool:
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


def bench(shape: str, steps: int, repeats: int, warmup: int, chosen: list[str]) -> dict:
    contenders = [c for c in chosen if c != "trl_sft" or trl_available()]
    results: dict[str, list[dict]] = {c: [] for c in contenders}
    with tempfile.TemporaryDirectory() as work:
        prepare(shape, Path(work))
        os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 20))  # read by each spawned child's glibc
        ctx = mp.get_context("spawn")
        for repeat in range(repeats):
            for contender in contenders:  # interleaved: drift on the machine hits every contender alike
                queue = ctx.Queue()
                proc = ctx.Process(target=run_one, args=(contender, shape, work, steps, warmup, queue))
                proc.start()
                proc.join()  # the result is a small dict: it fits the queue's buffer before the child exits
                if proc.exitcode != 0:
                    raise SystemExit(f"{contender} failed in repeat {repeat + 1} (exit {proc.exitcode})")
                results[contender].append(queue.get())
                step = results[contender][-1]["s_per_step"]
                print(f"  {shape} repeat {repeat + 1}/{repeats} {contender}: {step:.4f} s/step", flush=True)
    return {
        c: {key: statistics.median(r[key] for r in runs) for key in ("s_per_step", "tokens_per_s", "peak")}
        for c, runs in results.items()
    }


def report(shape: str, table: dict, steps: int, repeats: int) -> None:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\n### {shape} ({device}, {steps} timed steps, {repeats} interleaved repeats, medians)\n")
    print("| contender | s/step | tokens/s | peak MiB | time vs ours_ce |")
    print("|---|---|---|---|---|")
    base = table["ours_ce"]["s_per_step"]
    for name, row in table.items():
        print(
            f"| {name} | {row['s_per_step']:.4f} | {row['tokens_per_s']:,.0f} | {row['peak'] / 2**20:,.0f} "
            f"| {row['s_per_step'] / base:.3f}x |"
        )
    ce = table["ours_ce"]
    lines = []
    if "ours_perce" in table:
        lines.append(
            f"ours_perce / ours_ce time: {table['ours_perce']['s_per_step'] / ce['s_per_step']:.3f}x"
        )
    for peer in ("hf_trainer", "trl_sft"):
        if peer in table:
            lines.append(f"ours_ce / {peer} time: {ce['s_per_step'] / table[peer]['s_per_step']:.3f}x")
    if "ours_ce_full_logits" in table:
        old = table["ours_ce_full_logits"]
        lines.append(f"peak memory, full-logits CE / ours_ce: {old['peak'] / ce['peak']:.2f}x")
    print("\n" + "\n".join(lines))


def main(argv: list[str]) -> None:
    options = {
        "shape": "all",
        "repeats": "3",
        "warmup": None,
        "steps": None,
        "contenders": ",".join(CONTENDERS),
    }
    for arg in argv:
        key, _, value = arg.partition("=")
        if key not in options:
            raise SystemExit(f"unknown option {arg!r}; options: {', '.join(options)}")
        options[key] = value
    shapes = list(SHAPES) if options["shape"] == "all" else [options["shape"]]
    for shape in shapes:
        steps = int(options["steps"] or SHAPES[shape]["steps"])
        warmup = int(options["warmup"] or (5 if shape == "tiny" else 1))
        chosen = options["contenders"].split(",")
        if "ours_ce" not in chosen or set(chosen) - set(CONTENDERS):
            raise SystemExit(f"contenders: ours_ce and any of {', '.join(CONTENDERS)}")
        table = bench(shape, steps, int(options["repeats"]), warmup, chosen)
        report(shape, table, steps, int(options["repeats"]))


if __name__ == "__main__":
    main(sys.argv[1:])
