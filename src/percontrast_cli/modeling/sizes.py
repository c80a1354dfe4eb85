"""How big a model is and how much memory a stage of it needs, from configs alone: no weights are loaded and
torch is not imported (`percontrast ls` and `plan` run in seconds, also for a 4B model that is not here).

Parameter counts come, best first, from the tiny model's architecture, a local `config.json` (a model
directory, or the Hugging Face cache: read, never downloaded), or the size written in the model's name
(`Qwen3-4B`); each says which. Memory is an estimate of weights, gradients and optimizer state; activations
and the KV cache come on top and are said to.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

# SmolLM2-135M-Instruct (the embedded GGUF): its config.json's count.
SMOLLM2_PARAMETERS = 134_515_008
NAME_SIZE = re.compile(r"(?<![0-9.])(\d+(?:\.\d+)?)\s*([BbMm])(?![a-zA-Z])")
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 1 << 30


@dataclass(frozen=True)
class Size:
    parameters: int | None
    how: str  # where the count comes from, said next to it

    def __str__(self) -> str:
        return f"{human_count(self.parameters)} ({self.how})" if self.parameters else f"unknown ({self.how})"


def human_count(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


def human_bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit, scale in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def llama_like_parameters(config: dict) -> int | None:
    """Parameters of a decoder of the Llama family (Llama, Qwen2/3, SmolLM2, Mistral) from its config.json
    fields: embeddings (+ an untied head), attention with grouped KV heads, a gated MLP and the norms."""
    try:
        hidden, layers = config["hidden_size"], config["num_hidden_layers"]
        vocab, inter = config["vocab_size"], config["intermediate_size"]
        heads = config["num_attention_heads"]
    except KeyError:
        return None
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * inter
    norms = 2 * hidden + (2 * head_dim if "qwen3" in str(config.get("model_type", "")) else 0)
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", False) else 2)
    return embeddings + layers * (attention + mlp + norms) + hidden


def cached_config(repo_id: str) -> dict | None:
    """A hub model's config.json from the local Hugging Face cache (never the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a repo id, no cache
        return None
    return json.loads(Path(path).read_text()) if isinstance(path, str) else None


def parameter_count(model_cfg) -> Size:
    """The model's parameter count and where it comes from."""
    source = model_cfg.get("source")
    if source == "tiny":
        config = {
            "hidden_size": model_cfg.hidden_size,
            "num_hidden_layers": model_cfg.num_layers,
            "vocab_size": model_cfg.vocab_size,
            "intermediate_size": model_cfg.intermediate_size,
            "num_attention_heads": model_cfg.num_heads,
            "tie_word_embeddings": True,
        }
        return Size(llama_like_parameters(config), "its architecture, at the full vocabulary")
    if source == "smollm2":
        return Size(SMOLLM2_PARAMETERS, "SmolLM2-135M-Instruct's config")
    name = str(model_cfg.get("name_or_path") or "")
    local = Path(name).expanduser() / "config.json"
    config = json.loads(local.read_text()) if local.is_file() else cached_config(name)
    if config is not None and (count := llama_like_parameters(config)) is not None:
        return Size(count, "its config.json")
    if match := NAME_SIZE.search(Path(name).name):
        scale = 1e9 if match.group(2).lower() == "b" else 1e6
        return Size(int(float(match.group(1)) * scale), f"the size in its name {Path(name).name!r}")
    return Size(None, f"no config.json for {name!r} here and no size in its name")


@dataclass(frozen=True)
class Memory:
    bytes: float
    breakdown: str

    def __str__(self) -> str:
        return f"~{human_bytes(self.bytes)} (estimate: {self.breakdown}; activations and KV cache extra)"


# Which of (weights, gradients + optimizer state) each `distributed=` layout shards over its processes.
SHARDS = {"fsdp": (True, True), "deepspeed_zero3": (True, True), "deepspeed_zero2": (False, True)}


def training_memory(
    parameters: int, precision: str, lora_rank: int | None, layout: str = "none", processes: int = 1
) -> Memory:
    """Per process. Training keeps fp32 master weights (bf16 runs as autocast): full fine-tuning holds
    weights, gradients and AdamW's two moments in fp32 (4 + 12 bytes a parameter); LoRA holds the frozen fp32
    weights and trains adapters of well under 1% of them (counted as 1%, at 16 bytes each). FSDP and
    ZeRO-3 shard all of it over the processes, ZeRO-2 the gradients and optimizer state; DDP nothing."""
    shard_weights, shard_state = SHARDS.get(layout, (False, False))
    weights = parameters * 4 / (processes if shard_weights else 1)
    state = (parameters * 0.01 if lora_rank else parameters) * (16 if lora_rank else 12)
    state /= processes if shard_state else 1
    what = f"fp32 frozen weights + LoRA r={lora_rank} with AdamW" if lora_rank else "fp32 weights + gradients"
    what += "" if lora_rank else " + AdamW moments"
    what += " (bf16 autocast)" if precision == "bfloat16" else ""
    if processes > 1:
        what += f", per process of {layout} x{processes}"
    return Memory(weights + state, what)


def inference_memory(parameters: int, precision: str) -> Memory:
    """Scoring and generation load the weights at the resolved precision."""
    return Memory(parameters * BYTES.get(precision, 4), f"{precision} weights")
