"""Comparison reports over eval artifacts: grouped table (terminal, Markdown, CSV) and plots.

Rows are grouped by the options that differ between the evaluated runs (what a sweep swept), with seeds
pooled into mean ± std; each weighted-loss group is compared with the CE group that matches it on everything
else: the relative change of the means, and the paired difference with a 95% bootstrap interval over the
test examples (same seed, same examples on both sides), so a reader sees whether a gap is noise.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
from rich.table import Table

from percontrast_cli.artifacts import JOB_ARTIFACTS, Artifact, ArtifactStore
from percontrast_cli.errors import PercontrastError
from percontrast_cli.progress import say

METRICS = (
    "personal_token_acc",
    "nonpersonal_token_acc",
    "personal_token_loss",
    "rouge1",
    "rougeL",
    "meteor",
    "estimator_auroc",
    "estimator_f1",
)
# Metrics with a paired difference vs CE (resampled from each eval's per_example.jsonl).
PAIRED_METRICS = ("personal_token_acc", "nonpersonal_token_acc", "rougeL")
BOOTSTRAP_SAMPLES = 2000
# Options that can define a group (the experimental settings); seeds are pooled, plumbing is ignored.
# train_task: what the checkpoint was trained on (task.name is what it was evaluated on).
GROUPED = ("model.", "task.", "estimator.", "loss", "train.", "eval.", "train_task")


# Options a row takes from its checkpoint's manifest; the eval-time threshold stays the eval's own.
TRAINING_OPTIONS = ("model.", "train.", "estimator.", "loss.", "distributed.", "seed")
EVAL_TIME = ("estimator.tau", "model.dtype")


def collect_evals(store: ArtifactStore, refs: list[str]) -> list[Artifact]:
    """Eval artifacts from ids, paths, `latest`, Hydra job dirs or sweep dirs; each one once."""
    found: dict[str, Artifact] = {}
    for ref in refs:
        path = Path(ref)
        job_files = (
            [path / JOB_ARTIFACTS]
            if (path / JOB_ARTIFACTS).is_file()
            else sorted(path.glob(f"*/{JOB_ARTIFACTS}"))
        )
        if path.is_dir() and job_files:
            for job_file in job_files:
                eval_id = json.loads(job_file.read_text()).get("eval")
                if eval_id is None:  # a job that failed (or was stopped) before its eval
                    say(f"[yellow]skip[/yellow] {job_file.parent}: the job recorded no eval")
                    continue
                artifact = store.resolve("eval", eval_id)
                found[artifact.id] = artifact
        else:
            artifact = store.resolve("eval", ref)
            found[artifact.id] = artifact
    if not found:
        raise PercontrastError(f"no eval artifacts found in {refs}")
    return list(found.values())


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return out


def eval_row(store: ArtifactStore, evaluation: Artifact) -> dict:
    """The run's options (loss as actually trained) plus its metrics and its training log."""
    checkpoint = store.resolve("checkpoint", evaluation.inputs["checkpoint"])
    options = flatten(evaluation.manifest.get("run_config", {}))
    # How the checkpoint was trained comes from its own manifest, not from the eval job's defaults (a
    # standalone `eval` composes default train/estimator/model settings).
    trained = flatten(checkpoint.manifest.get("run_config", {}))
    options.update(
        {k: v for k, v in trained.items() if k.startswith(TRAINING_OPTIONS) and k not in EVAL_TIME}
    )
    loss = dict(checkpoint.manifest["config"]["loss"])
    loss["alpha"] = float(loss["alpha"])  # `loss.alpha=2` and `loss.alpha=2.0` are one setting
    options.update(flatten({"loss": loss}))
    options.pop("loss.name", None)
    options["loss"] = checkpoint.manifest["config"]["loss"]["name"]
    options["seed"] = checkpoint.manifest["config"]["seed"]
    options["train_task"] = checkpoint.manifest.get("train_task", options.get("task.name"))
    history_file = checkpoint.path / "log_history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else []
    examples_file = evaluation.path / "per_example.jsonl"
    lines = examples_file.read_text().splitlines() if examples_file.is_file() else []
    examples = [json.loads(line) for line in lines]
    return {
        "options": options,
        "metrics": evaluation.manifest["metrics"],
        "history": history,
        "examples": {e["id"]: e for e in examples},
        "id": evaluation.id,
    }


def group_keys(rows: list[dict]) -> list[str]:
    keys = sorted({k for r in rows for k in r["options"]})
    varying = [k for k in keys if len({json.dumps(r["options"].get(k)) for r in rows}) > 1]
    chosen = [k for k in varying if k.startswith(GROUPED)]
    return chosen or ["loss"]


def summarize(rows: list[dict], keys: list[str]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row["options"].get(k) for k in keys), []).append(row)
    summary = []
    for values, members in sorted(groups.items(), key=lambda kv: json.dumps(kv[0], default=str)):
        entry = {"options": dict(zip(keys, values, strict=True)), "n": len(members), "rows": members}
        entry["seeds"] = sorted(m["options"]["seed"] for m in members)
        for metric in METRICS:
            vals = [m["metrics"][metric] for m in members if metric in m["metrics"]]
            if vals:
                entry[metric] = (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)
        summary.append(entry)
    add_gains(summary)
    return summary


def non_loss_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if k != "loss" and not k.startswith("loss.")}


def add_gains(summary: list[dict]) -> None:
    """Relative change of each weighted-loss group's means vs the CE group equal to it in every non-loss
    option (for losses a negative change is the improvement)."""
    for entry in summary:
        if entry["options"].get("loss") == "ce":
            continue
        baseline = next(
            (
                b
                for b in summary
                if b["options"].get("loss") == "ce"
                and non_loss_options(b["options"]) == non_loss_options(entry["options"])
            ),
            None,
        )
        if baseline is None:
            continue
        entry["gain"] = {
            m: entry[m][0] / baseline[m][0] - 1.0
            for m in METRICS
            if m in entry and m in baseline and baseline[m][0] != 0
        }
        differences = {m: paired_difference(entry["rows"], baseline["rows"], m) for m in PAIRED_METRICS}
        entry["paired"] = {m: found for m, found in differences.items() if found}


def example_values(row: dict, ids: list[str], metric: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-example numerators and (for token accuracies) denominators of a metric, in `ids` order."""
    examples = [row["examples"][i] for i in ids]
    if metric == "rougeL":
        return np.array([e["rougeL"] for e in examples]), None
    kind = metric.removesuffix("_token_acc")
    return (
        np.array([e[f"{kind}_correct"] for e in examples], dtype=float),
        np.array([e[f"{kind}_total"] for e in examples], dtype=float),
    )


def paired_difference(rows: list[dict], baseline_rows: list[dict], metric: str, seed: int = 0):
    """Mean over seeds of (method - CE) on `metric`, with a 95% percentile-bootstrap interval: test examples
    are resampled with replacement, the same resample for both sides of every seed pair. Token accuracies
    are pooled over the resampled examples' tokens, as the metric itself is. None without pairs."""
    by_seed = {r["options"]["seed"]: r for r in baseline_rows}
    pairs = [(r, by_seed[r["options"]["seed"]]) for r in rows if r["options"]["seed"] in by_seed]
    pairs = [(a, b) for a, b in pairs if a["examples"] and b["examples"]]
    if not pairs:
        return None
    ids = sorted(set.intersection(*(set(a["examples"]) & set(b["examples"]) for a, b in pairs)))
    if not ids:
        return None
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(BOOTSTRAP_SAMPLES, len(ids)))
    everything = np.arange(len(ids))[None, :]

    def value(row, index):
        numerator, denominator = example_values(row, ids, metric)
        if denominator is None:
            return numerator[index].mean(axis=1)
        return numerator[index].sum(axis=1) / np.maximum(denominator[index].sum(axis=1), 1)

    point = np.mean([value(a, everything) - value(b, everything) for a, b in pairs])
    samples = np.mean([value(a, draws) - value(b, draws) for a, b in pairs], axis=0)
    low, high = np.percentile(samples, [2.5, 97.5])
    return {"diff": float(point), "low": float(low), "high": float(high), "pairs": len(pairs), "n": len(ids)}


def table_rows(summary: list[dict], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    metrics = [m for m in METRICS if any(m in e for e in summary)]
    paired = [m for m in PAIRED_METRICS if any(m in e.get("paired", {}) for e in summary)]
    header = [*keys, "seeds", *metrics, *(f"gain {m}" for m in metrics)]
    header += [f"Δ {m} vs CE [95% CI]" for m in paired]
    body = []
    for entry in summary:
        cells = [str(entry["options"][k]) for k in keys] + [",".join(map(str, entry["seeds"]))]
        cells += [f"{entry[m][0]:.4f} ± {entry[m][1]:.4f}" if m in entry else "" for m in metrics]
        gain = entry.get("gain", {})
        cells += [f"{gain[m]:+.1%}" if m in gain else "" for m in metrics]
        differences = entry.get("paired", {})
        cells += [format_difference(differences[m]) if m in differences else "" for m in paired]
        body.append(cells)
    return header, body


def format_difference(found: dict) -> str:
    """`+0.0123 [-0.0040, +0.0290]`, starred when the interval excludes zero."""
    star = "*" if found["low"] > 0 or found["high"] < 0 else ""
    return f"{found['diff']:+.4f} [{found['low']:+.4f}, {found['high']:+.4f}]{star}"


def write_tables(summary: list[dict], keys: list[str], out_dir: Path) -> Table:
    header, body = table_rows(summary, keys)
    with open(out_dir / "report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(body)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    table = Table(title="report")
    for column in header:
        table.add_column(column)
    for row in body:
        table.add_row(*row)
    return table


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Loss settings that say which weighting a row is (its name already does): left out of plot labels.
LOSS_IDENTITY = ("loss.weighting", "loss.clip_min", "loss.keep_ratio", "loss.normalize")


def plot_metric_vs(summary: list[dict], metric: str, x_key: str, path: Path, log_x: bool = False) -> None:
    """`metric` (mean ± std over seeds) against one swept option, a line per setting of the others:
    loss.alpha (CE is alpha 0 of every weighting's line) or train.lr (where CE breaks)."""
    plt = pyplot()
    alpha_plot = x_key == "loss.alpha"
    series: dict[str, dict] = {}
    ce_points = []
    for entry in summary:
        options = entry["options"]
        if metric not in entry or (x_key not in options and not alpha_plot):
            continue
        point = (float(options.get(x_key, 0.0)), *entry[metric])
        if alpha_plot and options.get("loss") == "ce":
            ce_points.append((non_loss_options(options), point))
            continue
        label = ", ".join(f"{k}={v}" for k, v in options.items() if k != x_key and k not in LOSS_IDENTITY)
        line = series.setdefault(label, {"context": non_loss_options(options), "points": []})
        line["points"].append(point)
    for line in series.values():
        line["points"] += [point for context, point in ce_points if context == line["context"]]
    if not series and ce_points:
        series["loss=ce"] = {"points": [point for _, point in ce_points]}
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, line in sorted(series.items()):
        xs, ys, errs = zip(*sorted(line["points"]), strict=True)
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label or metric)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("alpha (0 = CE)" if alpha_plot else x_key)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {x_key}\n(mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_transfer_matrix(summary: list[dict], metric: str, path: Path) -> None:
    """Train task x eval task, one panel per loss (mean over seeds), plus each weighted loss minus CE."""
    plt = pyplot()
    by_loss: dict[str, dict[tuple[str, str], float]] = {}
    for entry in summary:
        if metric in entry:
            options = entry["options"]
            cell = (options["train_task"], options["task.name"])
            by_loss.setdefault(str(options.get("loss", "?")), {})[cell] = entry[metric][0]
    panels = dict(sorted(by_loss.items()))
    if "ce" in by_loss:
        ce = by_loss["ce"]
        for loss, cells in sorted(by_loss.items()):
            if loss != "ce":
                panels[f"{loss} - ce"] = {c: v - ce[c] for c, v in cells.items() if c in ce}
    tasks = sorted({t for cells in by_loss.values() for cell in cells for t in cell})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (title, cells) in zip(axes[0], panels.items(), strict=True):
        grid = np.full((len(tasks), len(tasks)), np.nan)
        for (train_task, eval_task), value in cells.items():
            grid[tasks.index(train_task), tasks.index(eval_task)] = value
        difference = " - " in title
        bound = np.nanmax(np.abs(grid)) if difference else None
        image = ax.imshow(
            grid, cmap="RdBu" if difference else "viridis", vmin=-bound if difference else None, vmax=bound
        )
        for i in range(len(tasks)):
            for j in range(len(tasks)):
                if not np.isnan(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:+.3f}" if difference else f"{grid[i, j]:.3f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if difference else "white",
                    )
        short = [t.removeprefix("persona_") for t in tasks]
        ax.set_xticks(range(len(tasks)), short, fontsize=7)
        ax.set_yticks(range(len(tasks)), short, fontsize=7)
        ax.set_xlabel("eval task")
        ax.set_ylabel("train task")
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(f"{metric}: train task x eval task (mean over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_token_losses(summary: list[dict], path: Path) -> None:
    """Personal vs non-personal token loss over training steps, one colour per group, seeds averaged."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for index, entry in enumerate(summary):
        label = ", ".join(f"{k}={v}" for k, v in entry["options"].items() if k not in LOSS_IDENTITY)
        for key, style in (("personal_loss", "-"), ("nonpersonal_loss", ":")):
            by_step: dict[int, list[float]] = {}
            for row in entry["rows"]:
                for log in row["history"]:
                    if key in log:
                        by_step.setdefault(log["step"], []).append(log[key])
            if by_step:
                steps = sorted(by_step)
                ax.plot(
                    steps,
                    [statistics.mean(by_step[s]) for s in steps],
                    style,
                    color=f"C{index}",
                    label=f"{label}: {key.replace('_loss', '')}",
                )
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("token NLL")
    ax.set_title("personal (solid) vs non-personal (dotted) target-token loss", fontsize=10)
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
