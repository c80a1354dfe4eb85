"""Mean and spread over seeds of the eval artifacts in a store, grouped by loss setting.

    python scripts/compare_losses.py [outputs/artifacts]

Prints a Markdown table (loss, weighting, alpha, n seeds, then mean ± std of each metric).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

METRICS = ("personal_token_acc", "nonpersonal_token_acc", "personal_token_loss", "rougeL", "estimator_auroc")


def main(root: Path) -> None:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for manifest_path in sorted((root / "eval").glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        checkpoint_dir = root / "checkpoint" / manifest["inputs"]["checkpoint"]
        checkpoint = json.loads((checkpoint_dir / "manifest.json").read_text())
        loss = checkpoint["config"]["loss"]
        key = (loss["name"], loss["weighting"], loss["alpha"], checkpoint["config"]["steps"])
        groups[key].append({"seed": checkpoint["config"]["seed"], **manifest["metrics"]})
    header = ["loss", "weighting", "alpha", "steps", "seeds", *METRICS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for key, rows in sorted(groups.items()):
        cells = [str(k) for k in key] + [",".join(str(r["seed"]) for r in rows)]
        for metric in METRICS:
            values = [r[metric] for r in rows if metric in r]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {spread:.4f}" if values else "n/a")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/artifacts"))
