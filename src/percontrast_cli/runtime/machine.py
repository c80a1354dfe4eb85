"""The machine a payload was computed on, as every manifest records it (not part of any id).

Float results depend on the hardware as well as on the libraries: the same claims_lr checkpoints (same ids,
same code and library versions) retrained on an AMD EPYC (AVX-512 BF16) instead of the Xeon (AMX-BF16) that
made them first agreed to 3-4 digits at lr 2e-3 and drifted further at higher learning rates
(docs/results.md). So a manifest says which CPU, which GPUs and how many threads produced it."""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path

# /proc/cpuinfo flags that make bf16 fast on a CPU (Sapphire Rapids' AMX tiles, Cooper Lake's AVX-512 BF16).
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_description(info: str | None = None) -> str:
    """The CPU's model and whether it runs bf16 natively (`info`: /proc/cpuinfo's text)."""
    try:
        info = Path("/proc/cpuinfo").read_text() if info is None else info
    except OSError:
        return f"{platform.processor() or platform.machine()} (no /proc/cpuinfo: bf16 support unknown)"
    model = re.search(r"^model name\s*:\s*(.+)$", info, flags=re.M)
    flags = set((re.search(r"^flags\s*:\s*(.+)$", info, flags=re.M) or [None, ""])[1].split())
    found = [flag for flag in CPU_BF16_FLAGS if flag in flags]
    slow = "bf16: slow (no AMX / AVX-512 BF16; fp32 is faster)"
    bf16 = f"bf16: fast ({', '.join(found)})" if found else slow
    return f"{model.group(1) if model else platform.machine()}; {bf16}"


def cpu_model(description: str) -> str:
    """The model part of a `cpu_description` (what labels a CPU: calibration keys, a report's machines)."""
    return description.split(";")[0]


def machine() -> dict:
    """The CPU, the visible GPUs and torch's intra-op threads; torch is read only where the process has
    imported it already (a manifest written without torch has no GPU or thread count to tell)."""
    record: dict = {"cpu": cpu_description(), "gpus": None, "threads": None}
    torch = sys.modules.get("torch")
    if torch is not None:
        record["threads"] = torch.get_num_threads()
        record["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return record
