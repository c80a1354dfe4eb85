"""Recomputes the text metrics of finished eval artifacts from their saved predictions with the current
metric settings (e.g. LongLaMP's unstemmed ROUGE, the default since it replaced stemming), without
generating again.

    python scripts/rescore_evals.py <eval artifact dir> [...] [--stemmer]

Prints one JSON line per artifact: its id, its checkpoint's loss name, the stored and the recomputed metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from percontrast_cli.metrics import text_metrics


def main(argv: list[str]) -> None:
    stemmer = "--stemmer" in argv
    for directory in (Path(a) for a in argv if a != "--stemmer"):
        rows = [json.loads(line) for line in (directory / "predictions.jsonl").read_text().splitlines()]
        manifest = json.loads((directory / "manifest.json").read_text())
        recomputed = text_metrics([r["prediction"] for r in rows], [r["reference"] for r in rows], stemmer)
        stored = {k: manifest["metrics"].get(k) for k in ("rouge1", "rougeL", "meteor")}
        print(json.dumps({"eval": manifest["id"], "stored": stored, "recomputed": recomputed}))


if __name__ == "__main__":
    main(sys.argv[1:])
