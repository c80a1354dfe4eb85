"""Evaluation: generation + ROUGE, teacher-forced accuracy and loss on personal vs other tokens, and the
estimator's AUROC against the ground-truth personal spans."""

from __future__ import annotations

import time

import numpy as np
import torch
from rich.table import Table
from transformers import GenerationConfig

from percontrast_cli.data.encode import IGNORE, pad_left
from percontrast_cli.distributed import gather_by_position, my_batches
from percontrast_cli.estimate import TokenRecord, classifier_metrics, length_batches
from percontrast_cli.progress import track


def token_metrics(records: list[TokenRecord], tau: float) -> dict[str, float]:
    logp = np.concatenate([r.logp for r in records])
    correct = np.concatenate([r.correct for r in records]).astype(float)
    personal = np.concatenate([r.personal for r in records]).astype(bool)
    metrics = {"token_acc": correct.mean(), "token_loss": -logp.mean()}
    for name, mask in (("personal", personal), ("nonpersonal", ~personal)):
        if mask.any():
            metrics[f"{name}_token_acc"] = correct[mask].mean()
            metrics[f"{name}_token_loss"] = -logp[mask].mean()
    metrics.update(classifier_metrics(records, tau))
    return {k: float(v) for k, v in metrics.items()}


def example_rows(ids: list[str], records: list[TokenRecord], rouge_l) -> list[dict]:
    """Per test example, what the report's paired bootstrap resamples: hits and counts of personal and
    non-personal target tokens, and ROUGE-L of the generation."""
    rows = []
    for example_id, record, score in zip(ids, records, rouge_l, strict=True):
        personal = record.personal.astype(bool)
        rows.append(
            {
                "id": example_id,
                "personal_correct": int(record.correct[personal].sum()),
                "personal_total": int(personal.sum()),
                "nonpersonal_correct": int(record.correct[~personal].sum()),
                "nonpersonal_total": int((~personal).sum()),
                "rougeL": float(score),
            }
        )
    return rows


def prompt_ids(item: dict) -> list[int]:
    """The prompt part of an encoded item (everything before its first label): the exact, already
    truncated ids that training and scoring condition on, so generation sees the same prompt."""
    n_prompt = next(i for i, label in enumerate(item["labels"]) if label != IGNORE)
    return item["input_ids"][:n_prompt]


def decoding_config(eval_cfg, pad_id: int, stop_ids: list[int]) -> GenerationConfig:
    """Decoding pinned by ``eval.*`` alone: a checkpoint's own generation_config (a repetition penalty, a
    sampling default) never leaks in."""
    sampling = {"temperature": eval_cfg.temperature, "top_p": eval_cfg.top_p} if eval_cfg.do_sample else {}
    return GenerationConfig(
        max_new_tokens=eval_cfg.max_new_tokens,
        do_sample=eval_cfg.do_sample,
        num_beams=1,
        repetition_penalty=1.0,
        pad_token_id=pad_id,
        eos_token_id=stop_ids,
        **sampling,
    )


@torch.no_grad()
def generate(model, tokenizer, items: list[dict], eval_cfg, device, stop_ids: list[int]):
    """Batched generation from the items' prompt ids, left-padded (decoder-only models continue from the
    last prompt token), stopping at any of ``stop_ids`` (the end-of-turn token the model was trained on).
    Batches group prompts of similar length; predictions come back in item order, with the throughput."""
    model.eval()
    config = decoding_config(eval_cfg, tokenizer.pad_token_id, stop_ids)
    saved, model.generation_config = model.generation_config, config
    prompts_all = [prompt_ids(item) for item in items]
    batches = length_batches([len(p) for p in prompts_all], eval_cfg.batch_size)
    mine = my_batches(len(batches))  # a share of whole batches per process in a multi-process run
    local: dict[int, tuple[str, int]] = {}
    started = time.perf_counter()
    try:
        for number in track(mine, total=len(mine), description="generate"):
            positions = batches[number]
            prompts = [prompts_all[i] for i in positions]
            input_ids = pad_left(prompts, tokenizer.pad_token_id)
            attention_mask = pad_left([[1] * len(p) for p in prompts], 0)
            generated = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=config,
            )
            new_tokens = generated[:, input_ids.shape[1] :]
            counts = count_generated(new_tokens, stop_ids).tolist()
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for position, text, count in zip(positions, texts, counts, strict=True):
                local[position] = (text, int(count))
    finally:
        model.generation_config = saved
    seconds = time.perf_counter() - started
    results = gather_by_position(local, len(items))
    outputs = [text for text, _ in results]
    generated_tokens = sum(count for _, count in results)
    return outputs, {
        "generated_tokens": float(generated_tokens),
        "generation_tokens_per_s": generated_tokens / seconds,
    }


def count_generated(new_tokens: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """Tokens each row generated, up to and including its first stop token (the padding after it, which
    generate adds to finished rows, not counted)."""
    stops = torch.isin(new_tokens, torch.tensor(stop_ids, device=new_tokens.device))
    full = torch.full((new_tokens.shape[0],), new_tokens.shape[1], device=new_tokens.device)
    return torch.where(stops.any(1), stops.float().argmax(1) + 1, full)


def metrics_table(metrics: dict[str, float], title: str) -> Table:
    table = Table(title=title, min_width=len(title))  # the title on one line, not wrapped to the columns
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    return table
