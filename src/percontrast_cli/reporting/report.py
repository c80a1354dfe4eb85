"""Comparison reports over eval artifacts: console text, Markdown and CSV tables, and plots.

Rows (groups) are the settings that differ between the evaluated runs (what a sweep swept), seeds pooled into
mean ± std. Each weighted-loss group is compared with the CE group that matches it in every other setting: the
relative change of the means ("gain"), and the paired difference ("Δ": the mean over seeds of method − CE on
the same test targets) with a 95% interval from the crossed user x seed bootstrap of reporting/stats.py (the
test targets are not independent: a user's targets share one persona, and every seed meets the same users).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from percontrast_cli.reporting.aloe_report import aloe_report
from percontrast_cli.reporting.compute_matched import compute_matched_section
from percontrast_cli.reporting.curves import STEP, job_curves, plot_curves, training_cost, with_curves
from percontrast_cli.reporting.metric_table import FAMILIES, METRICS, family, metric_spec
from percontrast_cli.reporting.plots import (
    plot_differences,
    plot_metric_vs,
    plot_token_losses,
    plot_transfer_matrix,
)
from percontrast_cli.reporting.stats import baseline_of, paired_difference, same_evals
from percontrast_cli.reporting.tables import write_tables
from percontrast_cli.reporting.verdicts import Declared
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.runtime.machine import cpu_model
from percontrast_cli.runtime.progress import say
from percontrast_cli.store.artifacts import Artifact, ArtifactStore, job_records

# Options that can define a group (the experimental settings); seeds are pooled, plumbing is ignored.
# train_task: what the checkpoint was trained on (task.name is what it was evaluated on).
# step: the optimiser step of a learning curve's point (eval.at_steps).
GROUPED = ("model.", "task.", "estimator.", "loss", "train.", "eval.", "aloe.", "train_task", STEP)


# Options a row takes from its checkpoint's manifest; the eval-time threshold stays the eval's own.
TRAINING_OPTIONS = ("model.", "train.", "estimator.", "loss.", "distributed.", "seed")


EVAL_TIME = ("estimator.tau", "model.dtype")


def job_record(job_file: Path) -> dict:
    """A job's artifacts.json (role -> artifact id); a truncated or edited one is one line naming it."""
    try:
        record = json.loads(job_file.read_text())
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text ({exc.reason})"
    else:
        if isinstance(record, dict):
            return record
        problem = f"a JSON {type(record).__name__}, not an object of artifact ids"
    raise PercontrastError(
        f"{job_file}: {problem}; it is that job's record of its artifacts: rerun the job (the same "
        "command skips what it finished) or leave its directory out of report.evals"
    )


def collect_evals(store: ArtifactStore, refs: list[str]) -> list[Artifact]:
    """Eval artifacts from ids, paths, `latest`, Hydra job dirs or sweep dirs; each one once."""
    found: dict[str, Artifact] = {}
    for ref in refs:
        path = Path(ref)
        job_files = job_records(path)
        if job_files:
            for job_file in job_files:
                eval_id = job_record(job_file).get("eval")
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
    checkpoint = store.resolve("checkpoint", evaluation.inputs["checkpoint"], also=("model",))
    options = flatten(evaluation.manifest.get("run_config", {}))
    # How the checkpoint was trained comes from its own manifest, not from the eval job's defaults (a
    # standalone `eval` composes default train/estimator/model settings).
    trained = flatten(checkpoint.manifest.get("run_config", {}))
    options.update(
        {k: v for k, v in trained.items() if k.startswith(TRAINING_OPTIONS) and k not in EVAL_TIME}
    )
    # a base model (`eval checkpoint=<model id>`) was not trained here: its row is labelled `loss=none`
    trained_with = checkpoint.manifest["config"].get("loss", {"name": "none"})
    loss = dict(trained_with)
    for key, value in loss.items():  # `loss.alpha=2` and `loss.alpha=2.0` are one setting
        if isinstance(value, int) and not isinstance(value, bool):
            loss[key] = float(value)
    options.update(flatten({"loss": loss}))
    options.pop("loss.name", None)
    options["loss"] = trained_with["name"]
    options.update(warmup_setting(options))
    options["seed"] = checkpoint.manifest["config"].get("seed", options.get("seed"))
    options["train_task"] = checkpoint.manifest.get("train_task", options.get("task.name"))
    history_file = checkpoint.path / "log_history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else []
    examples_file = evaluation.path / "per_example.jsonl"
    lines = examples_file.read_text().splitlines() if examples_file.is_file() else []
    return {
        "options": options,
        "metrics": {**evaluation.manifest["metrics"], **training_cost(checkpoint.manifest)},
        "history": history,
        "examples": by_target([json.loads(line) for line in lines]),
        "id": evaluation.id,
        # the CPU (and GPUs) that trained the checkpoint: floats differ across machines (machine_line)
        "machine": machine_of(checkpoint.manifest) if checkpoint.kind == "checkpoint" else None,
    }


def machine_of(manifest: dict) -> str:
    """The machine a manifest records, as one label ("unrecorded" for artifacts made before it was)."""
    record = manifest.get("machine")
    if not record:
        return "unrecorded"
    gpus = record.get("gpus") or []
    return cpu_model(record["cpu"]) + (f" + {', '.join(sorted(set(gpus)))}" if gpus else "")


def warmup_setting(options: dict) -> dict:
    """`train.warmup_lr` as the warm-up's effective lr: null means "train.lr", the same warm-up and the same
    checkpoint id as naming it, and a checkpoint found rather than trained carries whichever spelling made it
    first; without this the two spellings are two groups and the weighted loss never meets its CE. A run
    without a warm-up (a pretrained model, warmup_steps 0) has no warm-up lr."""
    if not (options.get("model.from_scratch") and (options.get("train.warmup_steps") or 0) > 0):
        return {"train.warmup_lr": None}
    if options.get("train.warmup_lr") is None:
        return {"train.warmup_lr": options.get("train.lr")}
    return {}


def by_target(rows: list[dict]) -> dict[str, dict]:
    """Per-example rows keyed by target id. A target generated several times (eval.samples) has one row per
    sample: its entry is the first row with all of them under "samples" (the bootstrap averages them)."""
    found: dict[str, list[dict]] = {}
    for row in rows:
        found.setdefault(row["id"], []).append(row)
    return {i: rows[0] if len(rows) == 1 else {**rows[0], "samples": rows} for i, rows in found.items()}


def group_keys(rows: list[dict]) -> list[str]:
    keys = sorted({k for r in rows for k in r["options"]})
    varying = [k for k in keys if len({json.dumps(r["options"].get(k)) for r in rows}) > 1]
    chosen = [k for k in varying if k.startswith(GROUPED)]
    return chosen or ["loss"]


def metric_value(row: dict, name: str) -> float | None:
    metrics = row["metrics"]
    older = metric_spec(name).older
    value = metrics.get(name, metrics.get(older) if older else None)
    return None if value is None else float(value)


def report_metrics(rows: list[dict]) -> list[str]:
    """The metrics these evals have, in the report's order (the families, e.g. per-field recall, last)."""
    names = [m.name for m in METRICS if any(metric_value(r, m.name) is not None for r in rows)]
    found = dict.fromkeys(k for r in rows for k in r["metrics"])
    return names + [k for prefix, _, _ in FAMILIES for k in found if family(k) == prefix]


def summarize(rows: list[dict], keys: list[str]) -> list[dict]:
    """One entry per group: its options, label, eval rows, seeds, and per metric (mean, std, n) over seeds;
    then each weighted-loss group's gains and paired differences vs its CE group."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row["options"].get(k) for k in keys), []).append(row)
    metrics = report_metrics(rows)
    summary = []
    for values, members in sorted(groups.items(), key=lambda kv: tuple(map(option_order, kv[0]))):
        entry = {"options": dict(zip(keys, values, strict=True)), "n": len(members), "rows": members}
        entry["seeds"] = sorted(m["options"]["seed"] for m in members)
        ids = {i for m in members for i in m["examples"]}
        users = {e.get("user_id") for m in members for e in m["examples"].values()}
        entry["examples"], entry["users"] = len(ids), (len(users) if None not in users else None)
        entry["values"] = {}
        for metric in metrics:
            found = [v for m in members if (v := metric_value(m, metric)) is not None]
            if found:
                std = statistics.stdev(found) if len(found) > 1 else None
                entry["values"][metric] = (statistics.mean(found), std, len(found))
        summary.append(entry)
    add_labels(summary, keys)
    add_gains(summary, metrics)
    return summary


def option_order(value) -> tuple:
    """Groups in numeric order of their settings (step 3 before 24), other values in their JSON order."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, json.dumps(value, default=str))


def add_labels(summary: list[dict], keys: list[str]) -> None:
    """Each group's label: its swept settings as `key=value`. A loss.* setting is shown only for the loss
    whose groups differ in it (CE's fixed loss.* values, or EntCE's own clip range, say nothing)."""
    for entry in summary:
        loss = entry["options"].get("loss")
        same_loss = [e for e in summary if e["options"].get("loss") == loss]
        shown = []
        for key in keys:
            if key.startswith("loss.") and (
                loss == "ce" or len({json.dumps(e["options"].get(key)) for e in same_loss}) < 2
            ):
                continue
            shown.append(f"{key}={entry['options'].get(key)}")
        entry["label"] = ", ".join(shown) or "all"


def add_gains(summary: list[dict], metrics: list[str]) -> None:
    """Relative change of each weighted-loss group's means vs its CE group (method / CE − 1) and the paired
    difference with its bootstrap interval, for every metric with per-example rows."""
    for entry in summary:
        baseline = baseline_of(entry, summary)
        if baseline is None or same_evals(entry, baseline):  # a curve's step 0: one model, not a comparison
            continue
        mine, theirs = entry["values"], baseline["values"]
        entry["gain"] = {
            m: mine[m][0] / theirs[m][0] - 1.0 for m in metrics if m in mine and m in theirs and theirs[m][0]
        }
        differences = {m: paired_difference(entry["rows"], baseline["rows"], m) for m in metrics}
        entry["paired"] = {m: found for m, found in differences.items() if found}


def make_report(store: ArtifactStore, refs: list[str], report_cfg) -> tuple[str, Path, int]:
    """The `report` stage's work: tables and plots under report.out_dir; returns the console text, the
    directory and the number of evals."""
    declared = Declared.from_config(report_cfg)
    rows = [eval_row(store, e) for e in collect_evals(store, refs)]
    rows = with_curves(
        rows, job_curves(refs), lambda eval_id: eval_row(store, store.resolve("eval", eval_id))
    )
    keys = group_keys(rows)
    summary = summarize(rows, keys)
    present = {m for e in summary for m in e["values"]}
    declared.check(present)
    out_dir = Path(report_cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plotted = [m for m in report_cfg.plot_metrics if m in present]
    matched = compute_matched_section(
        summary, list(dict.fromkeys(filter(None, [declared.primary, *plotted])))
    )
    text = write_tables(summary, keys, out_dir, refs, report_cfg.get("title"), declared, matched)
    weighted = [e["options"] for e in summary if e["options"].get("loss") != "ce"]
    alpha_swept = len({json.dumps(o.get("loss.alpha")) for o in weighted}) > 1
    for metric in plotted:
        if alpha_swept:
            plot_metric_vs(summary, metric, "loss.alpha", out_dir / f"{metric}_vs_alpha.png")
        if "train.lr" in keys:
            plot_metric_vs(summary, metric, "train.lr", out_dir / f"{metric}_vs_lr.png", log_x=True)
        if {"train_task", "task.name"} <= set(keys):
            plot_transfer_matrix(summary, metric, out_dir / f"{metric}_transfer_matrix.png")
    if any(m in e.get("paired", {}) for e in summary for m in plotted):
        plot_differences(summary, plotted, out_dir / "differences_vs_ce.png")
    plot_token_losses(summary, out_dir / "token_loss_curves.png")
    plot_curves(summary, out_dir)  # eval.at_steps: every metric vs steps, training tokens and seconds
    text += aloe_report(store, summary, out_dir)  # task=aloe evals: AL(k) with intervals, AL(k) vs k
    return text, out_dir, len(rows)
