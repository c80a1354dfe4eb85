"""Condensed Markdown tables (the results doc's) from `percontrast report` outputs: each group's label (its
swept settings), seeds, the headline metrics (mean ± std over seeds) and their paired differences vs CE with
the report's 95% interval (its `ci_resampled`: crossed user x seed bootstrap), read from report.csv.

    python scripts/claims_tables.py outputs/reports/claims_methods [outputs/reports/claims_lr ...]
    python scripts/claims_tables.py --metrics persona_recall,reference_nll outputs/reports/claims_pretrained
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from percontrast_cli.reporting.metric_table import CONSOLE

# Shown when the report has them, in this order: the report's own headline metrics.
METRICS = CONSOLE


def value(row: dict, metric: str) -> str:
    mean, std = row.get(f"{metric}_mean", ""), row.get(f"{metric}_std", "")
    if not mean:
        return ""
    digits = 1 if abs(float(mean)) >= 10 else 4
    return f"{float(mean):.{digits}f}" + (f" ± {float(std):.{digits}f}" if std else "")


def difference(row: dict, metric: str) -> str:
    delta, low, high = (row.get(f"{metric}_{part}", "") for part in ("delta", "ci_low", "ci_high"))
    if not delta:
        return ""
    low_f, high_f = float(low), float(high)
    star = "*" if low_f > 0 or high_f < 0 else ""
    digits = 2 if abs(float(delta)) >= 10 else 4
    return f"{float(delta):+.{digits}f} [{low_f:+.{digits}f}, {high_f:+.{digits}f}]{star}"


def condensed(report_dir: Path, metrics=METRICS) -> str:
    with open(report_dir / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    shown = [m for m in metrics if any(r.get(f"{m}_mean") for r in rows)]
    paired = [m for m in shown if any(r.get(f"{m}_delta") for r in rows)]
    header = ["group", "seeds", *shown, *(f"Δ {m} vs CE [95% CI]" for m in paired)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["label"], row["seeds"], *(value(row, m) for m in shown)]
        cells += [difference(row, m) for m in paired]
        lines.append("| " + " | ".join(cells) + " |")
    users = sorted({r["n_users"] for r in rows if r.get("n_users")})
    examples = sorted({r["n_examples"] for r in rows if r.get("n_examples")})
    note = f"{'/'.join(examples)} test targets" + (f" from {'/'.join(users)} users" if users else "")
    levels = sorted({r["ci_resampled"] for r in rows if r.get("ci_resampled")})
    if levels:
        note += f"; Δ: method − CE, 95% interval resampling {' / '.join(levels)} (* excludes 0)"
    return "\n".join(lines) + f"\n\n{note}."


if __name__ == "__main__":
    arguments = sys.argv[1:]
    chosen = METRICS
    if arguments[:1] == ["--metrics"]:
        chosen, arguments = tuple(arguments[1].split(",")), arguments[2:]
    for argument in arguments:
        print(f"\n{argument}\n\n{condensed(Path(argument), chosen)}")
