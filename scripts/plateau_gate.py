"""The pretrained study's plateau gate (scripts/claims.sh pretrained): has CE's generic text plateaued at the
shared start? CE's held-out non-personal token accuracy after the study's extra steps (mean over seeds) must
differ from the start's own by less than the threshold; otherwise the comparison would mostly measure further
generic learning, not what the losses do to personal content.

    python scripts/plateau_gate.py <start job dir> <CE sweep dir> --threshold 0.02 --out gate.md

Writes a short Markdown section (the study's report appends it) and prints it; exits 1 with a message when
the gate fails. Artifacts are read from $PERCONTRAST_OUTPUTS/artifacts (default outputs/artifacts).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

METRIC = "nonpersonal_token_acc"
JOB_ARTIFACTS = "artifacts.json"


def eval_manifest(root: Path, job: Path) -> dict:
    eval_id = json.loads((job / JOB_ARTIFACTS).read_text())["eval"]
    return json.loads((root / "eval" / eval_id / "manifest.json").read_text())


def steps_of(root: Path, manifest: dict) -> int:
    checkpoint = json.loads(
        (root / "checkpoint" / manifest["inputs"]["checkpoint"] / "manifest.json").read_text()
    )
    return int(checkpoint["config"]["steps"])


def gate(start_job: Path, ce_sweep: Path, threshold: float, root: Path) -> tuple[bool, str]:
    start = eval_manifest(root, start_job)
    jobs = sorted(ce_sweep.glob(f"*/{JOB_ARTIFACTS}"))
    if not jobs:
        raise SystemExit(f"plateau gate: no finished CE jobs under {ce_sweep}")
    ce = [eval_manifest(root, job.parent) for job in jobs]
    before = start["metrics"][METRIC]
    after = [m["metrics"][METRIC] for m in ce]
    change = statistics.mean(after) - before
    passed = abs(change) < threshold
    start_steps, extra = steps_of(root, start), steps_of(root, ce[0])
    spread = f" ± {statistics.stdev(after):.4f}" if len(after) > 1 else ""
    seeds = ",".join(str(m["run_config"]["seed"]) for m in ce)
    verdict = "passed" if passed else "FAILED"
    text = (
        "## Plateau gate\n\n"
        f"CE's held-out {METRIC}: {before:.4f} at the shared start ({start_steps} CE steps), "
        f"{statistics.mean(after):.4f}{spread} after {extra} more CE steps (seeds {seeds}): change "
        f"{change:+.4f}, |change| {'<' if passed else '>='} {threshold}: **{verdict}**"
        + (
            " (generic text had plateaued: the losses are compared where CE no longer learns generic text)."
            if passed
            else f". Generic text has not plateaued at {start_steps} steps: raise PRETRAINED_START_STEPS."
        )
        + "\n"
    )
    return passed, text


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("start_job", type=Path)
    parser.add_argument("ce_sweep", type=Path)
    parser.add_argument("--threshold", type=float, default=0.02)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    root = Path(os.environ.get("PERCONTRAST_OUTPUTS", "outputs")) / "artifacts"
    passed, text = gate(args.start_job, args.ce_sweep, args.threshold, root)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    if not passed:
        print(
            "plateau gate failed: CE's generic-text accuracy still moves over the study's extra steps; the "
            "study stops here (raise PRETRAINED_START_STEPS and rerun: finished jobs are skipped)",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
