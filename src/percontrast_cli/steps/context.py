"""What every step works with: the resolved config, the artifact store, the device and the tracker."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from percontrast_cli.modeling.load import resolve_dtype
from percontrast_cli.store.artifacts import ArtifactStore


@dataclass
class Context:
    cfg: object
    store: ArtifactStore
    device: torch.device
    tracker: object

    @property
    def dtype(self) -> torch.dtype:
        """model.dtype resolved for this device (auto: bf16 on a GPU that supports it, else fp32)."""
        return resolve_dtype(self.cfg.model.dtype, self.device)

    @property
    def precision(self) -> str:
        """The resolved precision as artifact ids record it: ``float32`` or ``bfloat16``, never ``auto``."""
        return str(self.dtype).removeprefix("torch.")
