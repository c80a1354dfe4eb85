"""Comparison reports over eval artifacts: grouped table (terminal, Markdown, CSV) and plots.

Rows are grouped by the options that differ between the evaluated runs (what a sweep swept), with seeds
pooled into mean ± std; each PerCE group is compared with the CE group that matches it on everything else.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

from rich.table import Table

from percontrast_cli.artifacts import Artifact, ArtifactStore
from percontrast_cli.errors import PercontrastError

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
# Options that can define a group (the experimental settings); seeds are pooled, plumbing is ignored.
GROUPED = ("model.", "task.", "estimator.", "loss", "train.", "eval.")
JOB_ARTIFACTS = "artifacts.json"  # written by each `run` job into its Hydra output dir


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
                artifact = store.resolve("eval", json.loads(job_file.read_text())["eval"])
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
    loss = dict(checkpoint.manifest["config"]["loss"])
    loss["alpha"] = float(loss["alpha"])  # `loss.alpha=2` and `loss.alpha=2.0` are one setting
    options.update(flatten({"loss": loss}))
    options.pop("loss.name", None)
    options["loss"] = checkpoint.manifest["config"]["loss"]["name"]
    options["seed"] = checkpoint.manifest["config"]["seed"]
    history_file = checkpoint.path / "log_history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else []
    return {
        "options": options,
        "metrics": evaluation.manifest["metrics"],
        "history": history,
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


def add_gains(summary: list[dict]) -> None:
    """Relative change of each weighted-loss group's means vs the CE group equal to it in every non-loss
    option (for losses a negative change is the improvement)."""

    def context(entry):
        return {k: v for k, v in entry["options"].items() if k != "loss" and not k.startswith("loss.")}

    for entry in summary:
        if entry["options"].get("loss") == "ce":
            continue
        baseline = next(
            (b for b in summary if b["options"].get("loss") == "ce" and context(b) == context(entry)), None
        )
        if baseline is None:
            continue
        entry["gain"] = {
            m: entry[m][0] / baseline[m][0] - 1.0
            for m in METRICS
            if m in entry and m in baseline and baseline[m][0] != 0
        }


def table_rows(summary: list[dict], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    metrics = [m for m in METRICS if any(m in e for e in summary)]
    header = [*keys, "seeds", *metrics, *(f"gain {m}" for m in metrics)]
    body = []
    for entry in summary:
        cells = [str(entry["options"][k]) for k in keys] + [",".join(map(str, entry["seeds"]))]
        cells += [f"{entry[m][0]:.4f} ± {entry[m][1]:.4f}" if m in entry else "" for m in metrics]
        gain = entry.get("gain", {})
        cells += [f"{gain[m]:+.1%}" if m in gain else "" for m in metrics]
        body.append(cells)
    return header, body


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


def plot_metric_vs_alpha(summary: list[dict], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    series: dict[str, list] = {}
    for entry in summary:
        if metric not in entry:
            continue
        options = entry["options"]
        others = ", ".join(
            f"{k}={v}"
            for k, v in options.items()
            # CE joins every weighting's series at alpha 0, whatever its own (unused) clip settings.
            if k not in ("loss.alpha", "loss.weighting", "loss.clip_min", "loss.clip_max", "loss.keep_ratio")
        )
        series.setdefault(others, []).append((options.get("loss.alpha", 0.0), *entry[metric]))
    for label, points in sorted(series.items()):
        points.sort()
        xs, ys, errs = zip(*points, strict=True)
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label or metric)
    ax.set_xlabel("alpha (0 = CE)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs PerCE alpha\n(mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_token_losses(summary: list[dict], path: Path) -> None:
    """Personal vs non-personal token loss over training steps, one colour per group, seeds averaged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for index, entry in enumerate(summary):
        label = ", ".join(f"{k}={v}" for k, v in entry["options"].items())
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
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
