"""Per-token values of the training set as the loss reads them (kept apart from the Trainer, so the stages
that only score need not import it, and their code hash does not follow it)."""

from __future__ import annotations

import torch

from percontrast_cli.data.encode import at_targets


class ScoreTable:
    """Per-token values (PerContrast scores, or a reference model's NLL) for every training example, keyed by
    the example's index. Looked up when the loss is computed, not when the batch is collated: the Trainer
    fetches a step's micro-batches ahead, and a refresh between fetch and loss must still take effect."""

    def __init__(self, values: list[torch.Tensor]):
        self.values = values

    def lookup(self, batch: dict) -> torch.Tensor:
        """The batch's values on its label tail (the indices are a host list: no device sync). A filler row
        (index None, see RankShare) has no targets and no values."""
        rows = [self.values[i] for i in batch["index"] if i is not None]
        flat = torch.cat(rows) if rows else torch.zeros(0)
        device = batch["input_ids"].device
        return at_targets(flat.to(device, torch.float32, non_blocking=True), batch)
