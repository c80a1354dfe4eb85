"""PerContrast over a dataset: teacher-forced, batched, gradient-free scoring of every target token."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from percontrast_cli.contrast import sequence_target_logprobs, target_logprobs
from percontrast_cli.data.encode import IGNORE, Collator
from percontrast_cli.progress import track


@dataclass
class TokenRecord:
    """Per target token of one example: factual and counterfactual log-probs, argmax hit, personal label."""

    logp: np.ndarray
    cf_logp: np.ndarray | None  # None when only the factual pass ran (reference log-probs)
    correct: np.ndarray
    personal: np.ndarray

    @property
    def scores(self) -> np.ndarray:
        return self.logp - self.cf_logp


@torch.no_grad()
def teacher_forced_pass(
    model, pad_id: int, items: list[dict], batch_size: int, device, description: str, counterfactual=True
):
    """One factual and (unless ``counterfactual=False``) one counterfactual forward per batch, in eval mode;
    returns a TokenRecord per item."""
    model.eval()
    collate = Collator(pad_id)
    records: list[TokenRecord] = []
    starts = range(0, len(items), batch_size)
    for start in track(starts, total=len(starts), description=description):
        chunk = items[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logp = target_logprobs(logits, batch["labels"])
        shift_labels = batch["labels"][:, 1:]
        correct = (logits[:, :-1].argmax(-1) == shift_labels)[shift_labels != IGNORE]
        cf_logp = logp  # placeholder of the right shape, dropped below
        if counterfactual:
            cf_logp = sequence_target_logprobs(
                model, batch["cf_input_ids"], batch["cf_attention_mask"], batch["cf_labels"]
            )
        personal = batch["personal"][batch["labels"] != IGNORE]
        lengths = [sum(1 for x in item["labels"] if x != IGNORE) for item in chunk]
        for piece in zip(*(t.cpu().split(lengths) for t in (logp, cf_logp, correct, personal)), strict=True):
            record = TokenRecord(*(p.float().numpy() if p.is_floating_point() else p.numpy() for p in piece))
            records.append(record if counterfactual else replace(record, cf_logp=None))
    return records


def auroc(records: list[TokenRecord]) -> float | None:
    """AUROC of PerContrast scores against ground-truth personal-token labels (None without labels)."""
    labels = np.concatenate([r.personal for r in records])
    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, np.concatenate([r.scores for r in records])))


def classifier_metrics(records: list[TokenRecord], tau: float) -> dict[str, float]:
    """PerContrast as a personal-token classifier: precision, recall and F1 of ``s_t > tau`` against the
    ground-truth personal spans, with AUROC (empty without labels)."""
    labels = np.concatenate([r.personal for r in records]).astype(bool)
    if labels.all() or not labels.any():
        return {}
    predicted = np.concatenate([r.scores for r in records]) > tau
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="binary", zero_division=0
    )
    return {
        "estimator_auroc": auroc(records),
        "estimator_precision": float(precision),
        "estimator_recall": float(recall),
        "estimator_f1": float(f1),
    }


def save_scores(path: Path, ids: list[str], rows: list[np.ndarray]) -> None:
    """Per-token values as one flat float32 array with row offsets, keyed by example id in
    ``example_ids.txt``."""
    offsets = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    flat = np.concatenate(rows).astype(np.float32)
    save_file({"scores": flat, "offsets": offsets}, str(path / "scores.safetensors"))
    (path / "example_ids.txt").write_text("\n".join(ids) + "\n")


def load_scores(path: Path) -> dict[str, np.ndarray]:
    tensors = load_file(str(path / "scores.safetensors"))
    ids = (path / "example_ids.txt").read_text().split("\n")[:-1]
    flat, offsets = tensors["scores"], tensors["offsets"]
    return {i: flat[offsets[n] : offsets[n + 1]] for n, i in enumerate(ids)}
