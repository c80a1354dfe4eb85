"""Training on the HF Trainer with the weighted-CE core: plain CE, PerCE from an estimate artifact (rounds),
or PerCE with weights re-estimated inside every step from the current parameters (online bootstrap)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from percontrast_cli.contrast import contrast_scores
from percontrast_cli.data.encode import IGNORE, Collator, scatter_to_labels
from percontrast_cli.losses import is_weighted, token_nll, token_weights, weighted_nll
from percontrast_cli.progress import RichProgressCallback


class PerCETrainer(Trainer):
    # compute_loss divides by the target-token count of the whole accumulation window itself.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, loss_cfg, online_refresh: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_cfg = loss_cfg
        self.online_refresh = online_refresh
        # Makes the Trainer count target tokens over all micro-batches (and ranks) of a step:
        # that count arrives here as num_items_in_batch.
        self.model_accepts_loss_kwargs = True
        # NLL sums and token counts on personal / other target tokens since the last log.
        self.token_loss_sums = torch.zeros(4, dtype=torch.float64)

    def token_weights(self, model, inputs, logits) -> torch.Tensor | None:
        if not is_weighted(self.loss_cfg):
            return None
        if self.online_refresh:
            was_training = model.training
            model.eval()
            flat = contrast_scores(model, inputs, factual_logits=logits)
            model.train(was_training)
            scores = scatter_to_labels(flat, inputs["labels"])
        else:
            scores = inputs["scores"]
        return token_weights(scores, self.loss_cfg.weighting, self.loss_cfg.alpha, self.loss_cfg.max_weight)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        weights = self.token_weights(model, inputs, outputs.logits)
        nll = token_nll(outputs.logits, inputs["labels"])
        self.track_token_losses(nll.detach(), inputs)
        loss = weighted_nll(nll, inputs["labels"], weights, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch is summed over ranks while DDP averages gradients: undo the average.
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def track_token_losses(self, nll: torch.Tensor, inputs) -> None:
        target = inputs["labels"] != IGNORE
        personal = inputs["personal"] & target
        other = target & ~personal
        sums = torch.stack([nll[personal].sum(), personal.sum(), nll[other].sum(), other.sum()]).double()
        # Kept on the device: reading it back (a sync) happens only when a log line is written.
        self.token_loss_sums = self.token_loss_sums.to(sums.device) + sums

    def log(self, logs: dict, *args, **kwargs) -> None:
        """Adds the mean (unweighted) NLL of personal and other target tokens since the last log."""
        personal_sum, personal_n, other_sum, other_n = self.token_loss_sums.tolist()
        if "loss" in logs:
            if personal_n:
                logs["personal_loss"] = round(personal_sum / personal_n, 4)
            if other_n:
                logs["nonpersonal_loss"] = round(other_sum / other_n, 4)
            self.token_loss_sums.zero_()
        super().log(logs, *args, **kwargs)


class LogHistory(TrainerCallback):
    def __init__(self, tracker, prefix: str):
        self.tracker, self.prefix = tracker, prefix

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.tracker.log({f"{self.prefix}/{k}": v for k, v in logs.items()}, step=None)


def training_arguments(train_cfg, work_dir: Path, steps: int, seed: int, device: str) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(work_dir),
        max_steps=steps,
        per_device_train_batch_size=train_cfg.batch_size,
        gradient_accumulation_steps=train_cfg.grad_accum,
        learning_rate=train_cfg.lr,
        lr_scheduler_type=train_cfg.scheduler,
        warmup_steps=min(train_cfg.lr_warmup_steps, max(steps // 10, 1)),
        weight_decay=train_cfg.weight_decay,
        max_grad_norm=train_cfg.max_grad_norm,
        logging_steps=train_cfg.log_every,
        save_strategy="steps",
        save_steps=train_cfg.save_every,
        save_total_limit=1,
        report_to=[],
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
        bf16=train_cfg.bf16,
    )


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
    extra_callbacks: tuple = (),
) -> list[dict]:
    """Train in place; resumes from the last Trainer checkpoint in ``work_dir`` after a crash."""
    trainer = PerCETrainer(
        model=model,
        args=training_arguments(train_cfg, work_dir, steps, seed, device),
        train_dataset=items,
        data_collator=Collator(tokenizer.pad_token_id),
        loss_cfg=loss_cfg,
        online_refresh=online_refresh,
        callbacks=[RichProgressCallback(description), LogHistory(tracker, description), *extra_callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # the rich bar shows the loss instead
    resume = get_last_checkpoint(str(work_dir)) if work_dir.is_dir() else None
    trainer.train(resume_from_checkpoint=resume)
    return trainer.state.log_history
