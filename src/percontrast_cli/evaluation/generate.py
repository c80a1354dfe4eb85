"""Evaluation: generation + ROUGE/METEOR, persona recall / over-insertion / leakage and length of the
generations (persona_metrics), teacher-forced accuracy and NLL on personal vs other tokens and on the whole
reference, and the estimator's AUROC against the ground-truth personal spans."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.table import Table

from percontrast_cli.data.encode import IGNORE, length_batches, pad_left
from percontrast_cli.data.schema import Example
from percontrast_cli.evaluation.persona_metrics import persona_metrics, score_generation, value_pool
from percontrast_cli.evaluation.sampling import Sampling
from percontrast_cli.evaluation.text_metrics import text_metrics, text_scores
from percontrast_cli.method.estimate import TokenRecord, classifier_metrics
from percontrast_cli.runtime.distributed import gather_by_position, my_batches
from percontrast_cli.runtime.progress import track

if TYPE_CHECKING:
    from transformers import GenerationConfig


def token_metrics(records: list[TokenRecord], tau: float) -> dict[str, float]:
    logp = np.concatenate([r.logp for r in records])
    correct = np.concatenate([r.correct for r in records]).astype(float)
    personal = np.concatenate([r.personal for r in records]).astype(bool)
    metrics = {"token_acc": correct.mean(), "token_loss": -logp.mean()}
    # Held-out NLL of the whole reference: mean per-token NLL over every target token (the end-of-turn token
    # included), pooled over the test targets. A proper scoring rule, unlike the argmax accuracies: it cannot
    # be gained by tilting probability toward some tokens at the others' expense. (= token_loss, named.)
    metrics["reference_nll"] = metrics["token_loss"]
    for name, mask in (("personal", personal), ("nonpersonal", ~personal)):
        if mask.any():
            metrics[f"{name}_token_acc"] = correct[mask].mean()
            metrics[f"{name}_token_loss"] = -logp[mask].mean()
    metrics.update(classifier_metrics(records, tau))
    return {k: float(v) for k, v in metrics.items()}


def token_rows(records: list[TokenRecord]) -> list[dict]:
    """Per test example, the sums the report's bootstrap pools: hits, NLL and counts of personal and
    non-personal target tokens, and of the whole reference."""
    rows = []
    for record in records:
        personal = record.personal.astype(bool)
        nll = -record.logp.astype(float)
        rows.append(
            {
                "personal_correct": int(record.correct[personal].sum()),
                "personal_total": int(personal.sum()),
                "nonpersonal_correct": int(record.correct[~personal].sum()),
                "nonpersonal_total": int((~personal).sum()),
                "personal_nll": float(nll[personal].sum()),
                "nonpersonal_nll": float(nll[~personal].sum()),
                "target_nll": float(nll.sum()),
                "target_tokens": len(nll),
            }
        )
    return rows


def words(text: str) -> int:
    return len(text.split())


def score_outputs(
    examples: list[Example], predictions: list[str], records: list[TokenRecord], eval_cfg, wn, pool, task=None
) -> tuple[list[dict], dict[str, float]]:
    """Everything the eval derives from the generations and the scoring pass: the per-example rows
    (per_example.jsonl, what the report resamples) and the text, length and persona metrics. ``pool``: the
    examples whose users' persona values count as "another user's" for leakage (train and test); ``task``:
    the task's name (a persona task's templates give the slot sentences and request subjects)."""
    references = [e.output for e in examples]
    scores = text_scores(predictions, references, eval_cfg.rouge_stemmer, wn, with_meteor=eval_cfg.meteor)
    metrics = text_metrics(predictions, references, with_meteor=eval_cfg.meteor, scores=scores)
    values = value_pool(pool)
    rows = []
    for index, (example, prediction, tokens) in enumerate(
        zip(examples, predictions, token_rows(records), strict=True)
    ):
        row = {"id": example.id, "user_id": example.user_id, **tokens}
        row.update({name: float(per_example[index]) for name, per_example in scores.items()})
        row["generated_words"], row["reference_words"] = words(prediction), words(example.output)
        row.update(score_generation(example, prediction, values, task))
        rows.append(row)
    metrics["generated_words"] = float(np.mean([r["generated_words"] for r in rows]))
    metrics["reference_words"] = float(np.mean([r["reference_words"] for r in rows]))
    metrics.update(persona_metrics(rows))
    return rows, metrics


def prompt_ids(item: dict, prefix: str = "") -> list[int]:
    """The prompt part of an encoded item (everything before its first label): the exact, already
    truncated ids that training and scoring condition on, so generation sees the same prompt
    (``prefix="cf_"``: the counterfactual prompt)."""
    n_prompt = next(i for i, label in enumerate(item[f"{prefix}labels"]) if label != IGNORE)
    return item[f"{prefix}input_ids"][:n_prompt]


def with_cad(processors, model, items: list[dict], eval_cfg, pad_id: int, device):
    """``eval.decoding=cad``: context-aware decoding against the items' counterfactual prompts, before the
    other processors (sampling's warpers then act on CAD's scores); else ``processors`` as they are."""
    if eval_cfg.get("decoding", "plain") != "cad":  # callers with their own decoding settings: plain
        return processors
    from transformers import LogitsProcessorList

    from percontrast_cli.evaluation.cad import ContextAwareDecoding  # transformers.generation: seconds

    prompts = [prompt_ids(item, "cf_") for item in items]
    cad = ContextAwareDecoding(model, prompts, pad_id, eval_cfg.cad_alpha, device)
    return LogitsProcessorList([cad, *(processors or [])])


def decoding_config(
    max_new_tokens: int, pad_id: int, stop_ids: list[int], temperature: float = 0.0, top_p: float = 1.0
) -> GenerationConfig:
    """Decoding pinned by these settings alone (temperature 0: greedy): a checkpoint's own generation_config
    (a repetition penalty, a sampling default) never leaks in."""
    from transformers import GenerationConfig  # here: transformers.generation takes seconds to import

    sampled = temperature > 0
    sampling = {"temperature": temperature, "top_p": top_p} if sampled else {}
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sampled,
        num_beams=1,
        repetition_penalty=1.0,
        pad_token_id=pad_id,
        eos_token_id=stop_ids,
        **sampling,
    )


@torch.no_grad()
def generate(
    model,
    tokenizer,
    items: list[dict],
    eval_cfg,
    device,
    stop_ids: list[int],
    sampling: Sampling | None = None,
):
    """Batched generation from the items' prompt ids, left-padded (decoder-only models continue from the
    last prompt token), stopping at any of ``stop_ids`` (the end-of-turn token the model was trained on).
    Batches group prompts of similar length; predictions come back in item order, with the throughput.
    Greedy, or with ``sampling`` each item sampled from its own seed (evaluation/sampling.py)."""
    model.eval()
    config = decoding_config(eval_cfg.max_new_tokens, tokenizer.pad_token_id, stop_ids)
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
            steps = sampling.processors(positions) if sampling else None
            steps = with_cad(
                steps, model, [items[i] for i in positions], eval_cfg, tokenizer.pad_token_id, device
            )
            processors = {"logits_processor": steps} if steps is not None else {}
            generated = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=config,
                **processors,
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
