"""Condensed Markdown tables (the README's) from `percontrast report` outputs: the swept options and the
headline metrics with their paired differences vs CE.

    python scripts/claims_tables.py outputs/reports/claims_methods [outputs/reports/claims_lr ...]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

METRICS = ("personal_token_acc", "nonpersonal_token_acc", "rougeL")
# loss.* details that only say which weighting a row is (the loss name already does)
HIDDEN = ("loss.weighting", "loss.clip_min", "loss.keep_ratio", "loss.normalize")
RENAMED = {"task.name": "eval task", "train_task": "train task"}


def condensed(report_dir: Path) -> str:
    with open(report_dir / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    weighted = [r for r in rows if r["loss"] != "ce"] or rows

    def shown(option: str) -> bool:
        if option == "loss":
            return True
        if option.startswith("loss."):  # a setting of the one weighted loss, where the report varies it
            one_loss = len({r["loss"] for r in weighted}) == 1
            return one_loss and option not in HIDDEN and len({r[option] for r in weighted}) > 1
        return len({r[option] for r in rows}) > 1

    options = [o for o in header[: header.index("seeds")] if shown(o)]
    columns = [*options, "seeds", *METRICS, *(f"Δ {m} vs CE [95% CI]" for m in METRICS)]
    columns = [c for c in columns if c in header]
    names = [RENAMED.get(c, c) for c in columns]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(f"\n{argument}\n\n{condensed(Path(argument))}")
