"""Learning curves (`eval.at_steps`): a job's evals at several optimiser steps of one training run become
report rows with a `step` option, and every metric is drawn against optimiser steps, training tokens and
measured training seconds (compute-matched: PerCE's extra forward pass is in its seconds)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from percontrast_cli.reporting.metric_table import arrow, family
from percontrast_cli.reporting.plots import LEGEND, colours, pyplot
from percontrast_cli.reporting.stats import baseline_of, interval_description, same_evals
from percontrast_cli.store.artifacts import job_records

STEP = "step"  # the option a curve's rows carry
COST = ("train_tokens", "train_seconds")  # metrics the report takes from a checkpoint's `progress`
AXES = {  # file suffix: (what x is, axis label)
    "step": (STEP, "optimiser steps"),
    "tokens": ("train_tokens", "training tokens (non-padding)"),
    "seconds": ("train_seconds", "measured training seconds (PerCE's extra forward pass included)"),
}


def training_cost(checkpoint_manifest: dict) -> dict:
    """The training tokens and measured seconds up to a checkpoint, as metrics (absent when not recorded;
    seconds absent when a resumed run could not measure them from the start)."""
    progress = checkpoint_manifest.get("progress") or {}
    return {key: progress[key] for key in COST if progress.get(key) is not None}


def job_curves(refs: list[str]) -> dict[str, dict[int, str]]:
    """The curves the job dirs among `refs` recorded: their end's eval id -> {step: eval id}."""
    curves: dict[str, dict[int, str]] = {}
    for ref in refs:
        for record in job_records(Path(ref)):
            curve = json.loads(record.read_text()).get("curve") or {}
            ids = {int(step): eval_id for step, eval_id in curve.items()}
            if ids:
                curves.setdefault(ids[max(ids)], {}).update(ids)
    return curves


def with_curves(
    rows: list[dict], curves: dict[str, dict[int, str]], load: Callable[[str], dict]
) -> list[dict]:
    """Each row whose eval ends a recorded curve becomes one row per point: the run's options (its loss,
    seed and settings, also at step 0, where the evaluated model is the shared start) plus `step`."""
    expanded = []
    for row in rows:
        curve = curves.get(row["id"])
        if not curve:
            expanded.append(row)
            continue
        for step, eval_id in sorted(curve.items()):
            point = row if eval_id == row["id"] else load(eval_id)
            metrics = {**point["metrics"], **({key: 0 for key in COST} if step == 0 else {})}
            expanded.append({**point, "options": {**row["options"], STEP: step}, "metrics": metrics})
    return expanded


def curve_metrics(summary: list[dict]) -> list[str]:
    """Every metric of a curve report but the cost axes and the families (per field, per subject)."""
    present = dict.fromkeys(m for e in summary for m in e["values"])
    return [m for m in present if m not in COST and family(m) is None]


def series_label(entry: dict) -> str:
    parts = [part for part in entry["label"].split(", ") if not part.startswith(f"{STEP}=")]
    return ", ".join(parts) or str(entry["options"].get("loss"))


def plot_curves(summary: list[dict], out_dir: Path) -> list[Path]:
    """One figure per x axis (learning_curves_vs_step.png, _vs_tokens, _vs_seconds), a panel per metric, a
    line per run setting (mean over seeds), CE dashed as the labelled reference. A weighted loss's band is
    CE's mean plus the report's 95% interval of the paired difference (method − CE) at that point."""
    if not any(STEP in e["options"] for e in summary):
        return []
    metrics = curve_metrics(summary)
    written = []
    for suffix, (x_key, x_label) in AXES.items():
        path = out_dir / f"learning_curves_vs_{suffix}.png"
        if plot_axis(summary, metrics, x_key, x_label, path):
            written.append(path)
    return written


def x_value(entry: dict, x_key: str) -> float | None:
    if x_key == STEP:
        return float(entry["options"][STEP])
    found = entry["values"].get(x_key)
    return None if found is None else float(found[0])


def plot_axis(summary: list[dict], metrics: list[str], x_key: str, x_label: str, path: Path) -> bool:
    """The panels against one x axis; False (nothing written) when no point has that x (seconds of resumed
    runs are not measured)."""
    series: dict[str, list[dict]] = {}
    for entry in summary:
        if STEP in entry["options"] and x_value(entry, x_key) is not None:
            series.setdefault(series_label(entry), []).append(entry)
    if not series:
        return False
    plt = pyplot()
    columns = min(4, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.3 * columns, 2.7 * rows + 0.9), squeeze=False, layout="constrained"
    )
    palette = iter(colours(len(series)))
    for label, entries in sorted(series.items(), key=lambda kv: kv[1][0]["options"].get("loss") != "ce"):
        entries.sort(key=lambda e: e["options"][STEP])
        reference = entries[0]["options"].get("loss") == "ce"
        style = {"color": "black", "linestyle": "--"} if reference else {"color": next(palette)}
        for ax, metric in zip(axes.flat, metrics, strict=False):
            points = [(x_value(e, x_key), e) for e in entries if metric in e["values"]]
            if not points:
                continue
            xs = [x for x, _ in points]
            ax.plot(xs, [e["values"][metric][0] for _, e in points], marker="o", markersize=3, **style,
                    label=reference_label(label) if reference else label)  # fmt: skip
            band = [band_at(e, summary, metric) for _, e in points]
            if not reference and any(b is not None for b in band):
                low = [b[0] if b else math.nan for b in band]
                high = [b[1] if b else math.nan for b in band]
                ax.fill_between(xs, low, high, color=style["color"], alpha=0.15, linewidth=0)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        ax.set_title(metric + arrow(metric), fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.supxlabel(x_label, fontsize=9)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), **LEGEND)
    seeds = sorted({s for e in summary for s in e["seeds"]})
    fig.suptitle(
        f"learning curves: mean over seeds {','.join(map(str, seeds))}; band: CE + the 95% interval of "
        f"method − CE [{interval_description(summary)}]",
        fontsize=9,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def band_at(entry: dict, summary: list[dict], metric: str) -> tuple[float, float] | None:
    """Where the paired interval puts `entry`'s metric: CE's mean at the same point + [low, high] of Δ."""
    found = entry.get("paired", {}).get(metric)
    baseline = baseline_of(entry, summary)
    if baseline is None or metric not in baseline["values"]:
        return None
    ce = baseline["values"][metric][0]
    if found is None:  # step 0: CE's own model, the band closes on CE's mean
        return (ce, ce) if same_evals(entry, baseline) else None
    return ce + found["low"], ce + found["high"]


def reference_label(label: str) -> str:
    return "CE (reference)" if label == "loss=ce" else f"CE (reference), {label}"
