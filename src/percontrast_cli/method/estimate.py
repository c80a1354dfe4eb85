"""PerContrast over a dataset: teacher-forced, batched, gradient-free scoring of every target token."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file

from percontrast_cli.data.encode import Collator, flat_targets, length_batches, target_count
from percontrast_cli.method.contrast import target_nll
from percontrast_cli.method.losses import token_nll
from percontrast_cli.modeling.forward import tail, target_logits
from percontrast_cli.runtime.distributed import gather_by_position, is_sharded_module, my_batches
from percontrast_cli.runtime.progress import track


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
    """One factual and (unless ``counterfactual=False``) one counterfactual forward per batch, in eval mode,
    logits only on the label tails; items are batched by length, batches shared out over the processes of a
    multi-process run, and the records returned in item order (on every process)."""
    model.eval()
    collate = Collator(pad_id)
    batches = length_batches([len(item["input_ids"]) for item in items], batch_size)
    # all of them with one process; a share of whole batches with several (as many on every rank when the
    # model is sharded: rounds rescoring scores with the model being trained)
    mine = my_batches(len(batches), lockstep=is_sharded_module(model))
    local: dict[int, TokenRecord] = {}
    for number in track(mine, total=len(mine), description=description):
        positions = batches[number]
        chunk = [items[i] for i in positions]
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in collate(chunk).items()}
        logits = target_logits(model, batch)
        labels = tail(batch["labels"], batch["keep"])
        logp = -token_nll(logits, labels)
        correct = F.pad(logits[:, :-1].argmax(-1) == labels[:, 1:], (1, 0))
        cf_logp = -target_nll(model, batch, prefix="cf_") if counterfactual else logp
        values = [flat_targets(t, batch).cpu() for t in (logp, cf_logp, correct, batch["personal"])]
        lengths = [target_count(item) for item in chunk]
        for position, piece in zip(
            positions, zip(*(v.split(lengths) for v in values), strict=True), strict=True
        ):
            record = TokenRecord(*(p.float().numpy() if p.is_floating_point() else p.numpy() for p in piece))
            local[position] = record if counterfactual else replace(record, cf_logp=None)
    return gather_by_position(local, len(items))


def auroc(records: list[TokenRecord]) -> float | None:
    """AUROC of PerContrast scores against ground-truth personal-token labels (None without labels)."""
    from sklearn.metrics import roc_auc_score  # here, not at the top: sklearn takes a second to import

    labels = np.concatenate([r.personal for r in records])
    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, np.concatenate([r.scores for r in records])))


def classifier_metrics(records: list[TokenRecord], tau: float) -> dict[str, float]:
    """PerContrast as a personal-token classifier: precision, recall and F1 of ``s_t > tau`` against the
    ground-truth personal spans, with AUROC (empty without labels)."""
    from sklearn.metrics import precision_recall_fscore_support  # (as in auroc)

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


def save_scores(
    path: Path, ids: list[str], rows: list[np.ndarray], personal: list[np.ndarray] | None = None
) -> None:
    """Per-token values as one flat float32 array with row offsets, keyed by example id in
    ``example_ids.txt``; with ``personal``, the tokens' ground-truth labels beside them (so metrics at any
    threshold can be computed later from the stored scores)."""
    offsets = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    tensors = {"scores": np.concatenate(rows).astype(np.float32), "offsets": offsets}
    if personal is not None:
        tensors["personal"] = np.concatenate(personal).astype(np.uint8)
    save_file(tensors, str(path / "scores.safetensors"))
    (path / "example_ids.txt").write_text("\n".join(ids) + "\n")


def _rows(path: Path, name: str) -> dict[str, np.ndarray] | None:
    tensors = load_file(str(path / "scores.safetensors"))
    if name not in tensors:
        return None
    ids = (path / "example_ids.txt").read_text().split("\n")[:-1]
    flat, offsets = tensors[name], tensors["offsets"]
    return {i: flat[offsets[n] : offsets[n + 1]] for n, i in enumerate(ids)}


def load_scores(path: Path) -> dict[str, np.ndarray]:
    return _rows(path, "scores")


def load_labels(path: Path) -> dict[str, np.ndarray] | None:
    """The stored personal-token labels (bool), or None when the estimate has none."""
    labels = _rows(path, "personal")
    return None if labels is None else {k: v.astype(bool) for k, v in labels.items()}
