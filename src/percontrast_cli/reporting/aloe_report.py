"""`report` over ALOE evals (task=aloe): AL(k) per group of evals and each weighted loss's paired Δ vs its CE
group (every loss meets the same simulated users), with the report's crossed user x seed bootstrap intervals,
and a plot of AL(k) against k (a line per group). The eval artifacts' scores.jsonl is the input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from percontrast_cli.evaluation.aloe import SCORES
from percontrast_cli.reporting.plots import colours, pyplot
from percontrast_cli.reporting.stats import (
    BOOTSTRAP_SAMPLES,
    LEVEL,
    Units,
    baseline_of,
    bootstrap,
    percentile_interval,
    point_estimate,
)
from percontrast_cli.reporting.tables import markdown_table
from percontrast_cli.store.artifacts import ArtifactStore


def read_scores(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rows_of(store: ArtifactStore, member: dict) -> list[dict]:
    scores = store.root / "eval" / member["id"] / SCORES
    return read_scores(scores) if scores.is_file() else []


def user_sums(rows: list[dict], rounds: int, users: tuple) -> np.ndarray:
    """Per round, per user (ALOE profile, with all of its conversations: its personalities), the sum and the
    number of the judge's scores: (rounds, 2, users). A parse failure (None) counts in neither."""
    sums = np.zeros((rounds, 2, len(users)))
    for row in rows:
        if row["user"] not in users:
            continue
        u = users.index(row["user"])
        for k, score in enumerate(row["scores"][:rounds]):
            if score is not None:
                sums[k, :, u] += (score, 1.0)
    return sums


def al_units(evals: list[list[dict]], rounds: int) -> Units:
    """One side per round, one array per seed (eval): the bootstrap's input for a group's AL(k)."""
    users = [tuple(sorted({r["user"] for r in rows})) for rows in evals]
    return Units([user_sums(rows, rounds, u) for rows, u in zip(evals, users, strict=True)], users, "user")


def bootstrap_al(evals: list[list[dict]], rounds: int | None = None, seed: int = 0) -> dict:
    """AL(k) for every round and their mean (mean over seeds), each with the report's 95% interval: the
    crossed user x seed bootstrap (users: ALOE profiles with all their conversations)."""
    rounds = rounds or min(len(r["scores"]) for rows in evals for r in rows)
    units = al_units(evals, rounds)
    point, drawn = point_estimate(units), bootstrap(units, seed=seed)
    return summarise(point, drawn) | {
        "users": len(set().union(*units.units)),
        "conversations": sum(len(rows) for rows in evals),
        "design": units.design,
    }


def al_difference(pairs: list[tuple[list[dict], list[dict]]], rounds: int, seed: int = 0) -> dict:
    """Paired Δ AL(k) (method − CE) and Δ of the mean, per seed over the users both evals of the seed met,
    with the same crossed user x seed bootstrap (the same draw on both sides)."""
    arrays, names = [], []
    for method, baseline in pairs:
        users = tuple(sorted({r["user"] for r in method} & {r["user"] for r in baseline}))
        arrays.append(np.concatenate([user_sums(method, rounds, users), user_sums(baseline, rounds, users)]))
        names.append(users)
    units = Units(arrays, names, "user")
    point, drawn = point_estimate(units), bootstrap(units, seed=seed)
    found = summarise(point[:rounds] - point[rounds:], drawn[:, :rounds] - drawn[:, rounds:])
    return found | {"design": units.design, "pairs": len(pairs)}


def summarise(point: np.ndarray, drawn: np.ndarray) -> dict:
    """Per round the point value and its percentile interval; the same for the mean over rounds."""
    intervals = [percentile_interval(drawn[:, k]) for k in range(drawn.shape[1])]
    mean_low, mean_high = percentile_interval(np.nanmean(drawn, axis=1))
    return {
        "al": point.tolist(),
        "low": [low for low, _ in intervals],
        "high": [high for _, high in intervals],
        "mean": float(np.mean(point)),
        "mean_low": mean_low,
        "mean_high": mean_high,
    }


def cell(found: dict, k: int | None, signed: bool = False) -> str:
    sign = "+" if signed else ""
    if k is None:
        value, low, high = found["mean"], found["mean_low"], found["mean_high"]
    else:
        value, low, high = found["al"][k], found["low"][k], found["high"][k]
    star = "*" if signed and (low > 0 or high < 0) else ""
    return f"{value:{sign}.3f} [{low:{sign}.3f}, {high:{sign}.3f}]{star}"


def aloe_report(store: ArtifactStore, summary: list[dict], out_dir: Path) -> str:
    """For the report's groups that hold ALOE evals: aloe_AL.md / aloe_AL.csv (AL(k) and the mean over rounds,
    each with the report's crossed user x seed interval; each weighted loss's paired Δ vs its CE group), the
    same tables appended to report.md, and aloe_AL_vs_k.png. Returns the console text ("" without ALOE)."""
    found_rows = {id(entry): [(m, rows_of(store, m)) for m in entry["rows"]] for entry in summary}
    groups = [e for e in summary if any(rows for _, rows in found_rows[id(e)])]
    if not groups:
        return ""
    evals = {id(e): [rows for _, rows in found_rows[id(e)] if rows] for e in groups}
    rounds = min(len(r["scores"]) for e in groups for rows in evals[id(e)] for r in rows)
    levels = [(e.get("label") or "all", bootstrap_al(evals[id(e)], rounds)) for e in groups]
    header = ["group", "users", *(f"AL({k})" for k in range(1, rounds + 1)), "mean"]
    body = [
        [label, str(found["users"]), *(cell(found, k) for k in range(rounds)), cell(found, None)]
        for label, found in levels
    ]
    differences = []
    for entry in groups:
        baseline = baseline_of(entry, summary)
        if baseline is None or id(baseline) not in evals:
            continue
        by_seed = {m["options"]["seed"]: rows for m, rows in found_rows[id(baseline)] if rows}
        pairs = [(rows, by_seed[m["options"]["seed"]]) for m, rows in found_rows[id(entry)] if rows]
        pairs = [(a, b) for a, b in pairs if b]  # the seeds both groups have
        if pairs:
            differences.append((entry["label"], al_difference(pairs, rounds)))
    delta_header = ["group", *(f"Δ AL({k})" for k in range(1, rounds + 1)), "Δ mean"]
    delta_body = [
        [label, *(cell(found, k, signed=True) for k in range(rounds)), cell(found, None, signed=True)]
        for label, found in differences
    ]
    with open(out_dir / "aloe_AL.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *body] + ([[], delta_header, *delta_body] if differences else []))
    designs = sorted({found["design"] for _, found in levels + differences})
    interval = f"{LEVEL:.0%} percentile interval, {BOOTSTRAP_SAMPLES} draws, {' / '.join(designs)} bootstrap "
    interval += "over seeds x users (ALOE profiles with all their conversations)"
    lines = ["## ALOE: AL(k), the mean judge score at round k", ""]
    lines += [f"Mean over seeds [{interval}].", "", *markdown_table(header, body), ""]
    if differences:
        lines += [f"Paired Δ vs CE (same seeds, same users) [{interval}]; * excludes 0.", ""]
        lines += [*markdown_table(delta_header, delta_body), ""]
    section = "\n".join(lines)
    (out_dir / "aloe_AL.md").write_text(section)
    report_md = out_dir / "report.md"
    if report_md.is_file():
        report_md.write_text(report_md.read_text().rstrip("\n") + "\n\n" + section)
    plot_al(levels, rounds, out_dir / "aloe_AL_vs_k.png")
    text = [f"ALOE: AL(k), rounds 1-{rounds} [{interval}]"]
    for label, found in levels:
        values = ", ".join(f"AL({k + 1}) {found['al'][k]:.3f}" for k in range(rounds))
        text.append(f"  {label}: {values}; mean {cell(found, None)}")
    for label, found in differences:
        text.append(f"  {label} − CE: Δ mean {cell(found, None, signed=True)}")
    return "\n" + "\n".join(text) + "\n"  # after the report's own text


def plot_al(groups: list[tuple[str, dict]], rounds: int, path: Path) -> None:
    """AL(k) against k, a line (with its interval as a band) per group: CE vs PerCE at a glance."""
    plt = pyplot()
    ks = np.arange(1, rounds + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (label, found), color in zip(groups, colours(len(groups)), strict=True):
        ax.plot(ks, found["al"][:rounds], marker="o", color=color, label=label)
        ax.fill_between(ks, found["low"][:rounds], found["high"][:rounds], color=color, alpha=0.2)
    ax.set_xlabel("round k")
    ax.set_ylabel("AL(k): mean judge score (1-5)")
    ax.set_xticks(ks)
    ax.set_title("ALOE alignment per round\n(95% crossed user x seed bootstrap interval)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
