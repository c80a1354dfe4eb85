"""How often greedy generations fall into a repetition loop, per loss and curve step (issue 30's study).

Greedy decoding of a small model can repeat one sentence until the token limit: such a generation writes
few persona values, so persona recall at that point measures the loop as much as what the model learnt. A
generation loops here when one sentence of at least 4 words occurs 3 or more times in it.

    python scripts/curves_repetition.py <sweep dir>... [--out table.md]

Reads each job's `artifacts.json` (its `curve`: step -> eval id) under the sweep dirs and each eval's
predictions; prints a Markdown table: sweep dir, loss, step, seeds, share of looping generations (mean over
seeds, with the seeds' range) and generated words.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
from collections import defaultdict
from pathlib import Path

MIN_WORDS, MIN_REPEATS = 4, 3


def loops(text: str) -> bool:
    sentences = [" ".join(s.lower().split()) for s in re.split(r"(?<=[.!?])\s+|\n", text)]
    counts: dict[str, int] = defaultdict(int)
    for sentence in sentences:
        if len(sentence.split()) >= MIN_WORDS:
            counts[sentence] += 1
    return any(n >= MIN_REPEATS for n in counts.values())


def eval_dir(root: Path, eval_id: str) -> Path:
    return root / "artifacts" / "eval" / eval_id


def looping_share(root: Path, eval_id: str) -> tuple[float, float]:
    rows = [json.loads(line) for line in (eval_dir(root, eval_id) / "predictions.jsonl").open()]
    share = sum(loops(r["prediction"]) for r in rows) / len(rows)
    words = statistics.mean(len(r["prediction"].split()) for r in rows)
    return share, words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("PERCONTRAST_OUTPUTS", "outputs")))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    points: dict[tuple[str, str, int], dict[int, tuple[float, float]]] = defaultdict(dict)
    for sweep in args.sweeps:
        for job_file in sorted(sweep.glob("**/artifacts.json")):
            job = json.loads(job_file.read_text())
            if "eval" not in job:
                continue  # a job still running (or failed before its eval)
            end = json.loads((eval_dir(args.root, job["eval"]) / "manifest.json").read_text())["run_config"]
            # the loss and seed the model was trained with (an eval of a found checkpoint keeps the defaults)
            trained = json.loads(
                (args.root / "artifacts/checkpoint" / job["checkpoint"] / "manifest.json").read_text()
            )
            end = {**end, "loss": trained["config"]["loss"], "seed": trained["config"]["seed"]}
            curve = job.get("curve") or {"end": job["eval"]}
            for step, eval_id in curve.items():
                step = end["train"]["steps"] if step == "end" else int(step)
                points[(sweep.name, end["loss"]["name"], step)][end["seed"]] = looping_share(
                    args.root, eval_id
                )
    if not points:
        raise SystemExit(f"no jobs with artifacts.json under {', '.join(map(str, args.sweeps))}")
    lines = [
        "| sweep | loss | step | seeds | looping generations (mean, seeds' range) | generated words |",
        "|---|---|---|---|---|---|",
    ]
    for (name, loss, step), by_seed in sorted(points.items()):
        shares = [share for share, _ in by_seed.values()]
        words = statistics.mean(w for _, w in by_seed.values())
        seeds = ",".join(map(str, sorted(by_seed)))
        lines.append(
            f"| {name} | {loss} | {step} | {seeds} | {statistics.mean(shares):.2f} "
            f"({min(shares):.2f}-{max(shares):.2f}) | {words:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
