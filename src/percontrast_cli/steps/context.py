"""What every step works with: the resolved config, the artifact store, the device and the tracker."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from percontrast_cli.modeling.load import resolve_dtype
from percontrast_cli.runtime.errors import PercontrastError
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

    @property
    def side_precision(self) -> str:
        """The precision side models (the LLM judge, ALOE's simulator) load at: `auto` on this device."""
        return str(resolve_dtype("auto", self.device)).removeprefix("torch.")


def pick_device(name: str) -> torch.device:
    """`device=`: auto is CUDA when there is one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PercontrastError("device=cuda but no CUDA device is available (use device=auto or device=cpu)")
    return torch.device(name)
