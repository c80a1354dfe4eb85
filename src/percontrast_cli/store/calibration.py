"""Measured costs, so that `percontrast plan` estimates from measurements and never invents a number.

Every stage that computes (a real run, or `percontrast calibrate`) appends one record per kind of work it
did to ``paths.calibration`` (a JSON-lines file): the key (model, device, precision, sequence-length bucket,
the work's kind) and what it measured: seconds per unit of work in its loop, the stage's fixed overhead
(loading, encoding, saving), and its peak memory. Units: a training step (``train:<loss kind>``), a
scored target token (``score:contrast`` with its counterfactual pass, ``score:factual`` without), a
generated token (``generate``: counted as requested, ``max_new_tokens`` per example, so an early stop makes
the estimate an upper bound) and a base model's build (``model``: one unit).

`nearest` picks the record for a key: the same model, device and precision (otherwise the cost is unknown:
a 4B model on a GPU is not a tiny model on a CPU scaled), the same work kind, the closest length bucket,
the newest among equals.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filelock import FileLock


@dataclass(frozen=True)
class Key:
    model: str  # name and parameter count: a tiny model at another width is another model
    device: str  # cpu (with its thread count) or the GPU's name
    precision: str
    bucket: int  # model.max_length rounded up to a power of two
    work: str


@dataclass
class Record:
    key: Key
    seconds_per_unit: float
    units: float
    overhead_seconds: float
    peak_memory_bytes: float | None
    memory: str  # what the peak measures: "cuda allocated" or "process RSS"
    source: str  # "run <kind> <id>" or "calibrate"
    created: float = field(default_factory=time.time)
    extra: dict = field(default_factory=dict)  # e.g. target tokens per example, for plans without a tokenizer


def bucket(max_length: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, int(max_length)))))


def append(path: Path, records: list[Record]) -> None:
    """Append records under a file lock (parallel jobs of a sweep finish at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        with open(path, "a") as f:
            for record in records:
                f.write(json.dumps(asdict(record)) + "\n")


def load(path: Path) -> list[Record]:
    """Every readable record (a line cut short by a crash is skipped)."""
    records = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            raw = json.loads(line)
            records.append(Record(**{**raw, "key": Key(**raw["key"])}))
        except (ValueError, TypeError, KeyError):
            continue
    return records


def nearest(records: list[Record], key: Key, recent: int = 10) -> Record | None:
    """What to estimate `key` from, or None when nothing is comparable (see the module docstring): the mean
    of the `recent` newest comparable records at the closest length bucket (the first stage of a kind in a
    process also pays for its lazy imports; a mean spreads that over the stages of a sweep, as a sweep
    spreads it)."""
    comparable = [
        r
        for r in records
        if (r.key.model, r.key.device, r.key.precision, r.key.work)
        == (key.model, key.device, key.precision, key.work)
    ]
    if not comparable:
        return None
    closest = min(abs(math.log2(r.key.bucket) - math.log2(key.bucket)) for r in comparable)
    chosen = sorted(
        (r for r in comparable if abs(math.log2(r.key.bucket) - math.log2(key.bucket)) == closest),
        key=lambda r: r.created,
        reverse=True,
    )[:recent]
    newest = chosen[0]

    def mean(values) -> float:
        values = list(values)
        return sum(values) / len(values)

    peaks = [r.peak_memory_bytes for r in chosen if r.peak_memory_bytes]
    extra = {k: mean(r.extra[k] for r in chosen if k in r.extra) for k in newest.extra}
    return Record(
        key=newest.key,
        seconds_per_unit=mean(r.seconds_per_unit for r in chosen),
        units=mean(r.units for r in chosen),
        overhead_seconds=mean(r.overhead_seconds for r in chosen),
        peak_memory_bytes=max(peaks) if peaks else None,
        memory=newest.memory,
        source=newest.source if len(chosen) == 1 else f"mean of {len(chosen)}, newest {newest.source}",
        created=newest.created,
        extra=extra,
    )


def age(record: Record, now: float | None = None) -> str:
    seconds = (now or time.time()) - record.created
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.0f} {unit} old"
    return f"{seconds:.0f} s old"


def describe(record: Record, key: Key) -> str:
    """Which measurement an estimate comes from, and how far it is from what is asked."""
    where = f"{record.source}, {age(record)}"
    if record.key.bucket != key.bucket:
        where += f", length bucket {record.key.bucket} for {key.bucket}"
    return where
