"""Training on the HF Trainer with the weighted-CE core: plain CE, PerCE (weights re-estimated inside every
step, or every ``steps / N`` steps of the same run), and the token-weighting baselines (LossCE, EntCE,
DFT)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from percontrast_cli.data.encode import IGNORE, Collator
from percontrast_cli.method.contrast import contrast_logits, contrast_scores
from percontrast_cli.method.curve import CurvePoints, Progress
from percontrast_cli.method.gathered import trained_model
from percontrast_cli.method.losses import (
    causal_alpha,
    causal_nll,
    normalized,
    token_nll,
    token_weights,
    weight_signal,
    weighted_nll,
)
from percontrast_cli.method.schedule import lr_warmup
from percontrast_cli.method.score_table import ScoreTable
from percontrast_cli.method.training_progress import RichProgressCallback
from percontrast_cli.modeling.forward import tail, target_logits
from percontrast_cli.runtime.distributed import broadcast, cpu_fsdp
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.runtime.progress import say

FILLER = -1  # RankShare's index for a rank whose share of the last batch of an epoch is empty


def filler(item: dict) -> dict:
    """A stand-in row without targets: two prompt tokens, no labels. Its loss, gradient and statistics are
    zero, so a rank that has no examples left in an epoch's last batch still takes part in the step's
    collectives (DDP's gradient all-reduce, FSDP's all-gathers) without changing what is learnt."""
    row = {key: value for key, value in item.items() if key not in ("labels", "personal", "index", "id")}
    row["input_ids"] = item["input_ids"][:2]
    row["labels"] = [IGNORE] * 2
    row["personal"] = []
    if "cf_input_ids" in item:
        row["cf_input_ids"], row["cf_labels"] = item["cf_input_ids"][:2], [IGNORE] * 2
    if "index" in item:
        row["index"] = None
    return row


class WithFiller(Dataset):
    """The training items, plus ``FILLER`` (-1): a target-free stand-in row."""

    def __init__(self, items):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return filler(self.items[0]) if index == FILLER else self.items[index]


class RankShare(Sampler):
    """One rank's micro-batches in a run of ``world`` processes at ``per_rank`` examples each: the batches one
    process would form at ``per_rank * world`` (the same shuffled order, cut at the same places), each cut
    into ``world`` consecutive shares. A share left empty by a short last batch is one filler row.

    So N processes at batch B/N see exactly the examples, batches and optimiser steps of one process at batch
    B, epoch by epoch (accelerate's own sharding deals out whole batches round-robin and pads the last round
    with repeated examples: other batches, and a few examples counted twice per epoch). Every rank uses rank
    0's order (broadcast once per epoch), so samplers that draw from the global RNG agree too."""

    def __init__(self, sampler, per_rank: int, rank: int, world: int):
        self.sampler, self.per_rank, self.rank, self.world = sampler, per_rank, rank, world

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / (self.per_rank * self.world))

    def __iter__(self):
        order = broadcast(list(self.sampler))
        size = self.per_rank * self.world
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            yield batch[self.rank * self.per_rank : (self.rank + 1) * self.per_rank] or [FILLER]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


class PerCETrainer(Trainer):
    # compute_loss divides by the target-token count of the whole accumulation window itself.
    loss_is_scaled_for_ga = True

    def __init__(
        self, *args, loss_cfg, online_refresh: bool, score_table: ScoreTable | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.loss_cfg = loss_cfg
        self.online_refresh = online_refresh
        self.score_table = score_table
        # Makes the Trainer count target tokens over all micro-batches (and ranks) of a step:
        # that count arrives here as num_items_in_batch.
        self.model_accepts_loss_kwargs = True
        # Since the last log: NLL sum and count on personal / other target tokens, the weight sum, the counts
        # of tokens whose weight signal sat at the lower / upper clip bound, and the examples trained on.
        self.token_stats = torch.zeros(8, dtype=torch.float64)

    def get_train_dataloader(self) -> DataLoader:
        """One process: the Trainer's own loader. Several: RankShare's shares of one process's batches."""
        world = self.args.world_size
        if world == 1:
            return super().get_train_dataloader()
        per_rank = self._train_batch_size
        if self.args.train_sampling_strategy == "group_by_length":
            # megabatches of one process's optimiser step, as the Trainer forms them with one process
            lengths = [len(item["input_ids"]) for item in self.train_dataset]
            megabatch = per_rank * world * self.args.gradient_accumulation_steps
            order = LengthGroupedSampler(megabatch, lengths=lengths)
        else:
            # accelerate swaps it for its seeded sampler (data_seed + epoch), as it does with one process
            order = RandomSampler(self.train_dataset)
        shares = RankShare(order, per_rank, self.args.process_index, world)
        loader = DataLoader(
            WithFiller(self.train_dataset),
            batch_sampler=shares,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        loader = self.accelerator.prepare(loader)
        # The shares are already this rank's: make accelerate's own sharding wrapper a passthrough (as the
        # Trainer does for its rank-aware BatchRebalanceSampler).
        wrapper = getattr(loader, "batch_sampler", None)
        if wrapper is not None and getattr(wrapper, "batch_sampler", None) is shares:
            wrapper.num_processes, wrapper.process_index = 1, 0
        return loader

    def token_weights(self, model, inputs, labels, logits, nll, cf_logits=None):
        signal = weight_signal(self.loss_cfg)
        if signal is None:
            return None
        mask = labels != IGNORE
        if signal == "contrast":  # NextQuill: both passes' distributions, from the same two forward passes
            factual, counterfactual = contrast_logits(model, inputs, logits, cf_logits)
            with torch.no_grad():
                nlls = {"nll": token_nll(factual, labels), "cf_nll": token_nll(counterfactual, labels)}
            return token_weights(self.loss_cfg, mask, logits=factual, cf_logits=counterfactual, **nlls)
        if signal == "pir" and self.online_refresh:
            pir = contrast_scores(model, inputs, factual_nll=nll)
            return token_weights(self.loss_cfg, mask, pir=pir)
        if signal == "pir":
            return token_weights(self.loss_cfg, mask, pir=self.score_table.lookup(inputs))
        if signal == "reference":
            return token_weights(self.loss_cfg, mask, nll=nll, ref_nll=self.score_table.lookup(inputs))
        return token_weights(self.loss_cfg, mask, nll=nll, logits=logits)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Logits only on the label tail; the loss and the weights in fp32 (token_nll upcasts).
        logits = target_logits(model, inputs)
        labels = tail(inputs["labels"], inputs["keep"])
        nll = token_nll(logits, labels)
        # NextQuill's causal term needs the counterfactual pass with gradient (it trains through both passes)
        causal = causal_alpha(self.loss_cfg)
        cf_logits = target_logits(model, inputs, "cf_") if causal else None
        weights = self.token_weights(model, inputs, labels, logits, nll, cf_logits)
        self.track_token_stats(nll.detach(), labels, inputs["personal"], weights, example_count(inputs))
        values = None
        if weights is not None:
            values = normalized(weights.values, labels != IGNORE, self.loss_cfg.normalize)
        loss = weighted_nll(nll, labels, values, num_items_in_batch)
        if cf_logits is not None:  # unweighted, over the step's target tokens (NextQuill's mean)
            term = causal_nll(logits, cf_logits, labels)
            loss = loss + causal * weighted_nll(term, labels, None, num_items_in_batch)
        if not torch.isfinite(loss.detach()):  # one host sync a micro-batch, as the Trainer's own NaN filter
            self.report_non_finite(nll, values, labels, inputs)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch is summed over ranks while DDP averages gradients: undo the average.
            loss = loss * self.accelerator.num_processes
        return (loss, logits) if return_outputs else loss

    def report_non_finite(self, nll: torch.Tensor, weights: torch.Tensor | None, labels, inputs) -> None:
        """Stop at the first non-finite loss, naming the step and the examples whose NLL or weights are not
        finite (the Trainer would otherwise hide a NaN loss in its logs and train on)."""
        target = labels != IGNORE
        nll_ok = torch.isfinite(nll).logical_or(~target).all(dim=1)
        weights_ok = torch.ones_like(nll_ok)
        if weights is not None:
            weights_ok = torch.isfinite(weights).logical_or(~target).all(dim=1)
        bad = ~(nll_ok & weights_ok)
        rows = bad.nonzero().flatten().tolist() or list(range(len(bad)))
        names = [self.example_name(inputs, row) for row in rows]
        what = "token weights (scores)" if not bool(weights_ok.all()) else "token NLL"
        raise PercontrastError(
            f"non-finite {what} at training step {self.state.global_step + 1}: example {', '.join(names)}; "
            "check those examples' scores and the learning rate"
        )

    def example_name(self, inputs, row: int) -> str:
        if "index" not in inputs:
            return f"row {row} of the batch"
        item = self.train_dataset[inputs["index"][row]]
        return repr(item.get("id", f"#{inputs['index'][row]}"))

    def track_token_stats(self, nll: torch.Tensor, labels, personal, weights, examples: int) -> None:
        target = labels != IGNORE
        personal = personal & target
        other = target & ~personal
        zero = nll.new_zeros(())
        if weights is None:
            weight_sum, at_min, at_max = target.sum(), zero, zero
        else:
            weight_sum = (weights.values * target).sum()
            at_min = (weights.at_min & target).sum() if weights.at_min is not None else zero
            at_max = (weights.at_max & target).sum() if weights.at_max is not None else zero
        stats = [(nll * personal).sum(), personal.sum(), (nll * other).sum(), other.sum()]
        stats = torch.stack([*stats, weight_sum, at_min, at_max, nll.new_tensor(examples)]).double()
        # Kept on the device: reading it back (a sync) happens only when a log line is written.
        self.token_stats = self.token_stats.to(stats.device) + stats

    def log(self, logs: dict, *args, **kwargs) -> None:
        """Adds the mean (unweighted) NLL of personal and other target tokens since the last log, the mean
        loss weight, the share of target tokens whose weight sat at each clip bound, and the number of
        examples trained on. With several processes these are sums over all ranks (every rank logs at the
        same step, as the Trainer's own loss gather requires), so they are the run's values, not rank 0's."""
        if "loss" in logs:
            if self.args.world_size > 1:
                self.token_stats = self.accelerator.reduce(self.token_stats, reduction="sum")
            personal_sum, personal_n, other_sum, other_n, weight_sum, at_min, at_max, examples = (
                self.token_stats.tolist()
            )
            if personal_n:
                logs["personal_loss"] = personal_sum / personal_n
            if other_n:
                logs["nonpersonal_loss"] = other_sum / other_n
            if tokens := personal_n + other_n:
                logs["weight_mean"] = weight_sum / tokens
                logs["weight_at_min"] = at_min / tokens
                logs["weight_at_max"] = at_max / tokens
            logs["examples"] = int(examples)
            self.token_stats.zero_()
        super().log(logs, *args, **kwargs)


def example_count(inputs: dict) -> int:
    """Training examples in a micro-batch (filler rows, index None, not counted)."""
    if "index" not in inputs:
        return int(inputs["input_ids"].shape[0])
    return sum(1 for index in inputs["index"] if index is not None)


class RoundsRefresh(TrainerCallback):
    """``estimator.refresh=rounds``: re-estimates the score table at fixed steps of one training run, with the
    current parameters; optimiser, scheduler and data order carry on untouched.

    ``rescore(step, model)`` returns the per-example scores after ``step`` optimiser steps (steps/training.py
    publishes each round's scores as an ``estimate`` artifact, and on a resumed run reads them back).
    """

    def __init__(self, table: ScoreTable, boundaries: list[int], rescore: Callable):
        self.table, self.boundaries, self.rescore = table, sorted(boundaries), rescore
        self.current = 0  # the step whose model produced the table's scores (0: the given first estimate)
        self.refreshed_at: list[int] = []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        due = max((b for b in self.boundaries if b <= state.global_step), default=0)
        if due != self.current:
            was_training = model.training
            self.table.values = self.rescore(due, model)
            model.train(was_training)
            self.current = due
            self.refreshed_at.append(due)


class LogHistory(TrainerCallback):
    def __init__(self, tracker, prefix: str):
        self.tracker, self.prefix = tracker, prefix

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            logs = {**logs, "step": state.global_step}  # the curve's x axis (tracking.WandbTracker.log)
            self.tracker.log({f"{self.prefix}/{k}": v for k, v in logs.items()}, step=None)


def training_arguments(
    train_cfg, work_dir: Path, steps: int, seed: int, device: str, bf16: bool = False, ddp_backend=None
) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(work_dir),
        max_steps=steps,
        per_device_train_batch_size=train_cfg.batch_size,
        gradient_accumulation_steps=train_cfg.grad_accum,
        learning_rate=train_cfg.lr,
        lr_scheduler_type=train_cfg.scheduler,
        warmup_steps=lr_warmup(train_cfg, steps),
        weight_decay=train_cfg.weight_decay,
        max_grad_norm=train_cfg.max_grad_norm,
        logging_steps=train_cfg.log_every,
        save_strategy="steps",
        save_steps=train_cfg.save_every,
        save_total_limit=1,
        report_to=[],
        include_num_input_tokens_seen="non_padding",  # a run's training tokens (CurvePoints)
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
        bf16=bf16,  # autocast over fp32 master weights (model.dtype bfloat16, or auto on a bf16 GPU)
        train_sampling_strategy="group_by_length" if train_cfg.group_by_length else "random",
        activation_checkpointing=train_cfg.gradient_checkpointing,
        # non-reentrant: works with frozen inputs (LoRA) and with the no-grad counterfactual pass
        activation_checkpointing_kwargs={"use_reentrant": False},
        ddp_backend=ddp_backend,  # several processes: the Trainer's own DDP / FSDP / DeepSpeed
        # FSDP on CPU: keep the worker's process state, which routes accelerate to FSDP (worker.py)
        accelerator_config={"use_configured_state": True} if cpu_fsdp() else None,
    )


def last_complete_checkpoint(work_dir: Path) -> str | None:
    """The newest Trainer checkpoint that was written to the end: the Trainer writes trainer_state.json
    last, so a checkpoint without it (a crash while saving) is skipped for the one before."""
    if not work_dir.is_dir():
        return None
    candidates = sorted(
        (p for p in work_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for path in candidates:
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, json.JSONDecodeError):
            say(f"[yellow]skip[/yellow] incomplete Trainer checkpoint {path}")
            continue
        return str(path)
    return None


@dataclass
class Trained:
    history: list[dict]  # the Trainer's log history
    model: object | None  # the trained model, complete and unsharded, on rank 0 (None on the other ranks)
    progress: Progress  # steps, tokens and measured seconds at the end


def fit(
    model,
    tokenizer,
    items: list[dict],
    *,
    train_cfg,
    loss_cfg,
    online_refresh: bool,
    steps: int,
    seed: int,
    work_dir: Path,
    device: str,
    tracker,
    description: str,
    bf16: bool = False,
    ddp_backend: str | None = None,
    score_table: ScoreTable | None = None,
    extra_callbacks: tuple = (),
    curve: CurvePoints | None = None,
) -> Trained:
    """Train; resumes from the last Trainer checkpoint in ``work_dir`` after a crash. Every rank of a
    multi-process run calls this; the trained model comes back on rank 0 (see trained_model). ``curve``:
    points of the run to publish on the way (by default only the time and tokens are measured)."""
    curve = curve or CurvePoints()
    trainer = PerCETrainer(
        model=model,
        args=training_arguments(train_cfg, work_dir, steps, seed, device, bf16, ddp_backend),
        train_dataset=items,
        data_collator=Collator(tokenizer.pad_token_id),
        loss_cfg=loss_cfg,
        online_refresh=online_refresh,
        score_table=score_table,
        callbacks=[RichProgressCallback(description), LogHistory(tracker, description), curve],
    )
    for callback in extra_callbacks:
        trainer.add_callback(callback)
    curve.gather = lambda: trained_model(trainer)
    trainer.remove_callback(PrinterCallback)  # the rich bar shows the loss instead
    kind = trainer.accelerator.distributed_type.value  # which parallelism accelerate chose
    if kind != "NO":
        processes = f"{trainer.args.world_size} process{'es' if trainer.args.world_size > 1 else ''}"
        say(f"[dim]{description}: {processes} ({kind})[/dim]")
    trainer.train(resume_from_checkpoint=curve.resume(last_complete_checkpoint(work_dir)))
    return Trained(trainer.state.log_history, trained_model(trainer), curve.progress(trainer.state))
