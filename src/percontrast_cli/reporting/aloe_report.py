"""`report` over ALOE evals (task=aloe): AL(k) per group of evals with user-level bootstrap intervals, and
a plot of AL(k) against k (a line per group: CE vs PerCE). The eval artifacts' scores.jsonl is the input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from percontrast_cli.evaluation.aloe import SCORES
from percontrast_cli.reporting.stats import BOOTSTRAP_SAMPLES
from percontrast_cli.reporting.tables import markdown_table
from percontrast_cli.store.artifacts import ArtifactStore


def read_scores(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def user_resamples(rows: list[dict], samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """AL(k) of the rows as they are (rounds) and of `samples` bootstrap resamples (samples x rounds) that
    draw users (ALOE profiles) with replacement: all conversations of a drawn profile, over its
    personalities and over the evals pooled here, go in together. Rounds: the fewest any row has."""
    rounds = min(len(r["scores"]) for r in rows)
    users = sorted({r["user"] for r in rows})
    sums, counts = np.zeros((len(users), rounds)), np.zeros((len(users), rounds))
    for row in rows:
        u = users.index(row["user"])
        for k, score in enumerate(row["scores"][:rounds]):
            if score is not None:
                sums[u, k] += score
                counts[u, k] += 1
    draws = np.random.default_rng(seed).integers(0, len(users), size=(samples, len(users)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums.sum(0) / counts.sum(0), sums[draws].sum(1) / counts[draws].sum(1), len(users)


def bootstrap_al(rows: list[dict], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """AL(k) for every round and their mean, each with a 95% percentile interval over user resamples."""
    point, resampled, users = user_resamples(rows, samples, seed)
    low, high = np.nanpercentile(resampled, [2.5, 97.5], axis=0)
    means = np.nanmean(resampled, axis=1)
    return {
        "al": point.tolist(),
        "low": low.tolist(),
        "high": high.tolist(),
        "mean": float(np.mean(point)),
        "mean_low": float(np.nanpercentile(means, 2.5)),
        "mean_high": float(np.nanpercentile(means, 97.5)),
        "users": users,
        "conversations": len(rows),
    }


def aloe_report(store: ArtifactStore, summary: list[dict], out_dir: Path) -> str:
    """For the report's groups that hold ALOE evals (seeds pooled): aloe_AL.md / aloe_AL.csv (AL(k) and the
    mean, each with a 95% user-bootstrap interval), the same table appended to report.md, and
    aloe_AL_vs_k.png. Returns the console text ("" when no eval is an ALOE one)."""
    groups = []
    for entry in summary:
        rows = []
        for member in entry["rows"]:
            scores = store.root / "eval" / member["id"] / SCORES
            rows += read_scores(scores) if scores.is_file() else []
        if rows:
            groups.append((entry.get("label") or "all", bootstrap_al(rows)))
    if not groups:
        return ""
    rounds = min(len(found["al"]) for _, found in groups)
    header = ["group", "users", *(f"AL({k})" for k in range(1, rounds + 1)), "mean"]
    body = []
    for label, found in groups:
        cells = [
            f"{found['al'][k]:.3f} [{found['low'][k]:.3f}, {found['high'][k]:.3f}]" for k in range(rounds)
        ]
        mean = f"{found['mean']:.3f} [{found['mean_low']:.3f}, {found['mean_high']:.3f}]"
        body.append([label, str(found["users"]), *cells, mean])
    with open(out_dir / "aloe_AL.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    lines = markdown_table(header, body)
    note = "95% intervals: percentile bootstrap over users (ALOE profiles with all their conversations); "
    note += "seeds pooled."
    section = "\n".join(["## ALOE: AL(k), the mean judge score at round k", "", *lines, "", note, ""])
    (out_dir / "aloe_AL.md").write_text(section)
    report_md = out_dir / "report.md"
    if report_md.is_file():
        report_md.write_text(report_md.read_text().rstrip("\n") + "\n\n" + section)
    plot_al(groups, rounds, out_dir / "aloe_AL_vs_k.png")
    text = [f"ALOE: AL(k) [95% user-bootstrap interval], rounds 1-{rounds}"]
    for label, found in groups:
        values = ", ".join(f"AL({k + 1}) {found['al'][k]:.3f}" for k in range(rounds))
        text.append(
            f"  {label}: {values}; "
            f"mean {found['mean']:.3f} [{found['mean_low']:.3f}, {found['mean_high']:.3f}]"
        )
    return "\n" + "\n".join(text) + "\n"  # after the report's own text


def plot_al(groups: list[tuple[str, dict]], rounds: int, path: Path) -> None:
    """AL(k) against k, a line (with its interval as a band) per group: CE vs PerCE at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.arange(1, rounds + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for index, (label, found) in enumerate(groups):
        color = f"C{index}"
        ax.plot(ks, found["al"][:rounds], marker="o", color=color, label=label)
        ax.fill_between(ks, found["low"][:rounds], found["high"][:rounds], color=color, alpha=0.2)
    ax.set_xlabel("round k")
    ax.set_ylabel("AL(k): mean judge score (1-5)")
    ax.set_xticks(ks)
    ax.set_title("ALOE alignment per round\n(95% bootstrap interval over users)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
