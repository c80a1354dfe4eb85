"""How far to trust `percontrast plan`'s time estimate: plan a sweep whose first half exists, run the second
half, and set the wall time against the estimate.

    python scripts/bench_plan.py [outputs_dir]      # default: a new temp dir (under the CPU lock: seconds)

1. `percontrast run -m experiment=miniature loss=ce,perce seed=0` (skipped when it exists): every stage
   records what it cost (the calibration `plan` reads);
2. `percontrast plan -m experiment=miniature loss=ce,perce seed=0,1`: the seed-0 stages are found, the
   seed-1 ones to compute, with the estimated total (stages shared by the two seed-1 jobs counted once,
   plus the start of the process);
3. `percontrast run -m experiment=miniature loss=ce,perce seed=1`, timed from the outside;
4. prints actual / estimated and exits 1 unless it is within 1/3x .. 3x (the issue's acceptance band).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["experiment=miniature", "loss=ce,perce"]
BAND = (1 / 3, 3.0)


def percontrast(*args: str, env: dict) -> float:
    """Run the CLI; its wall time in seconds (a failure stops the benchmark)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "percontrast_cli.cli", *args], env=env, capture_output=True
    )
    if result.returncode != 0:
        sys.exit(f"percontrast {' '.join(args)} failed:\n{result.stderr.decode()[-3000:]}")
    return time.perf_counter() - started


def estimate(root: Path) -> tuple[float, int, list]:
    """plan's estimated total for the seed-0,1 sweep, and the plans, from the same code `plan` runs."""
    os.environ["PERCONTRAST_OUTPUTS"] = str(root)
    from percontrast_cli.cli.main import validate_overrides
    from percontrast_cli.cli.plan import estimated_total, plan_jobs

    points = validate_overrides([*SWEEP, "seed=0,1"], with_points=True)
    plans, startup = plan_jobs(points)
    seconds, unknown, _ = estimated_total(plans, startup)
    return seconds, unknown, plans


def main() -> None:
    root = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bench-plan-")) / "outputs"
    )
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(root)}
    first = percontrast("run", "-m", *SWEEP, "seed=0", env=env)
    print(f"seed 0 (calibrates): {first:.1f} s")
    seconds, unknown, plans = estimate(root)
    statuses = {(p.overrides, s.name): s.status for p in plans for s in p.stages}
    seed0 = [status for (job, _), status in statuses.items() if job.endswith("seed=0")]
    seed1 = [status for (job, _), status in statuses.items() if job.endswith("seed=1")]
    print(f"plan: seed-0 stages {sorted(set(seed0))}, seed-1 stages {sorted(set(seed1))}")
    if unknown or set(seed0) != {"found"} or set(seed1) != {"to compute"}:
        sys.exit(f"plan is not what the benchmark needs ({unknown} unknown times)")
    actual = percontrast("run", "-m", *SWEEP, "seed=1", env=env)
    ratio = actual / seconds
    verdict = "within" if BAND[0] <= ratio <= BAND[1] else "OUTSIDE"
    print(f"seed 1: estimated {seconds:.1f} s, actual {actual:.1f} s: actual/estimated {ratio:.2f}", end=" ")
    print(f"({verdict} 1/3x..3x)")
    sys.exit(0 if verdict == "within" else 1)


if __name__ == "__main__":
    main()
