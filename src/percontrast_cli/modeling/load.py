"""Loading a model + tokenizer from a checkpoint directory (artifact payload or any local HF directory)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from percontrast_cli.errors import PercontrastError
from percontrast_cli.fingerprint import fingerprint


def load_model_and_tokenizer(path: str | Path):
    path = Path(path)
    if not (path / "config.json").is_file():
        raise PercontrastError(f"{path}: not a model directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    return model, tokenizer


def tokenizer_fingerprint(tokenizer) -> str:
    """Identity of a tokenizer's vocabulary and merges: artifacts built with another one are rejected."""
    return fingerprint(tokenizer.backend_tokenizer.to_str())
