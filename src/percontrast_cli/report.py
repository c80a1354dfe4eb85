"""Comparison reports over eval artifacts: console text, Markdown and CSV tables, and plots.

Rows (groups) are the settings that differ between the evaluated runs (what a sweep swept), seeds pooled into
mean ± std. Each weighted-loss group is compared with the CE group that matches it in every other setting: the
relative change of the means ("gain"), and the paired difference ("Δ": the mean over seeds of method − CE on
the same test examples) with a 95% interval from a hierarchical bootstrap, because the test targets are not
independent: seeds are resampled with replacement, then, within each drawn seed, the test USERS (all of a
user's targets together: they share one persona). Evals whose per-example rows carry no user ids (older ones)
fall back to resampling examples, and the report says so.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from percontrast_cli.aloe_report import aloe_report
from percontrast_cli.artifacts import JOB_ARTIFACTS, Artifact, ArtifactStore
from percontrast_cli.errors import PercontrastError
from percontrast_cli.progress import say

Sums = Callable[[dict], "tuple[float, float] | None"]


def ratio(numerator: str, denominator: str) -> Sums:
    """A metric pooled over tokens (or counts): sum of numerators / sum of denominators."""

    def sums(row: dict):
        if numerator in row and denominator in row:
            return float(row[numerator]), float(row[denominator])
        return None

    return sums


def mean_of(key: str) -> Sums:
    """A mean of per-example scores (ROUGE, METEOR, length)."""
    return lambda row: (float(row[key]), 1.0) if key in row else None


def count_ratio(numerator: str, denominator: str) -> Sums:
    """Persona rates: fields listed in `numerator` over fields listed (or counted) in `denominator`."""

    def sums(row: dict):
        if numerator not in row:
            return None
        total = row[denominator]
        return float(len(row[numerator])), float(total if isinstance(total, int) else len(total))

    return sums


def field_recall(field: str) -> Sums:
    def sums(row: dict):
        if "persona_present" not in row:
            return None
        present = field in row["persona_present"]
        return float(present and field in row["persona_recalled"]), float(present)

    return sums


@dataclass(frozen=True)
class Metric:
    name: str
    better: str  # higher | lower | "" (a description, e.g. length: neither is better)
    about: str  # one line of the report's legend
    sums: Sums | None = (
        None  # per-example (numerator, denominator): the bootstrap's unit; None: no Δ interval
    )
    older: str | None = None  # the key older evals stored it under


METRICS = (
    Metric(
        "persona_recall",
        "higher",
        "share of the persona fields the reference writes (name, town, brand, hobby, catchphrase, greeting, "
        "sign-off, emoji) that the generation writes with the user's value",
        count_ratio("persona_recalled", "persona_present"),
    ),
    Metric(
        "persona_over_insertion",
        "lower",
        "share of the user's persona fields the reference does not write that the generation writes anyway",
        count_ratio("persona_over_inserted", "persona_absent"),
    ),
    Metric(
        "persona_leakage",
        "lower",
        "share of persona fields in which the generation writes another user's value",
        count_ratio("persona_leaked", "persona_n_fields"),
    ),
    Metric("rougeL", "higher", "ROUGE-L F1 of the generation (LongLaMP's scorer)", mean_of("rougeL")),
    Metric("rouge1", "higher", "ROUGE-1 F1 of the generation", mean_of("rouge1")),
    Metric("meteor", "higher", "METEOR of the generation", mean_of("meteor")),
    Metric(
        "generated_words",
        "",
        "length of the generation in words (whitespace-split)",
        mean_of("generated_words"),
    ),
    Metric(
        "reference_nll",
        "lower",
        "held-out NLL of the whole reference: mean per-token NLL over all target tokens, teacher-forced (a "
        "proper scoring rule)",
        ratio("target_nll", "target_tokens"),
        older="token_loss",
    ),
    Metric(
        "personal_token_acc",
        "higher",
        "teacher-forced argmax accuracy on the personal target tokens (ground-truth persona spans)",
        ratio("personal_correct", "personal_total"),
    ),
    Metric(
        "nonpersonal_token_acc",
        "higher",
        "the same on the other (generic) target tokens",
        ratio("nonpersonal_correct", "nonpersonal_total"),
    ),
    Metric(
        "personal_token_loss",
        "lower",
        "mean NLL of the personal target tokens",
        ratio("personal_nll", "personal_total"),
    ),
    Metric(
        "nonpersonal_token_loss",
        "lower",
        "mean NLL of the other target tokens",
        ratio("nonpersonal_nll", "nonpersonal_total"),
    ),
    Metric(
        "judge_score",
        "higher",
        "eval.judge's 1-5 personalization score of the generation (expected value over the judge's "
        "probabilities of 1-5)",
        mean_of("judge_score"),
    ),
    Metric(
        "judge_agreement", "higher", "the judge's Spearman correlation with persona recall (no Δ interval)"
    ),
    Metric("estimator_auroc", "higher", "PerContrast scores vs the personal spans: AUROC (no Δ interval)"),
    Metric("estimator_f1", "higher", "the same: F1 at estimator.tau (no Δ interval)"),
)
SECTIONS = {  # the Markdown report's tables
    "Generation": (
        "persona_recall",
        "persona_over_insertion",
        "persona_leakage",
        "rougeL",
        "rouge1",
        "meteor",
        "generated_words",
        "judge_score",
        "judge_agreement",
    ),
    "Teacher-forced scoring of the reference": (
        "reference_nll",
        "personal_token_acc",
        "nonpersonal_token_acc",
        "personal_token_loss",
        "nonpersonal_token_loss",
    ),
    "Estimator": ("estimator_auroc", "estimator_f1"),
}
# What the console shows (narrow): the headline metrics.
CONSOLE = (
    "persona_recall",
    "persona_over_insertion",
    "persona_leakage",
    "reference_nll",
    "personal_token_acc",
    "nonpersonal_token_acc",
    "rougeL",
    "meteor",
    "generated_words",
)
FIELD_RECALL = "persona_recall_"  # + field: per-field recall, its own table
BOOTSTRAP_SAMPLES = 2000
# Options that can define a group (the experimental settings); seeds are pooled, plumbing is ignored.
# train_task: what the checkpoint was trained on (task.name is what it was evaluated on).
GROUPED = ("model.", "task.", "estimator.", "loss", "train.", "eval.", "aloe.", "train_task")


# Options a row takes from its checkpoint's manifest; the eval-time threshold stays the eval's own.
TRAINING_OPTIONS = ("model.", "train.", "estimator.", "loss.", "distributed.", "seed")
EVAL_TIME = ("estimator.tau", "model.dtype")


def metric_spec(name: str) -> Metric:
    for metric in METRICS:
        if metric.name == name:
            return metric
    if name.startswith(FIELD_RECALL):
        field = name.removeprefix(FIELD_RECALL)
        return Metric(name, "higher", f"persona recall of the field {field}", field_recall(field))
    return Metric(name, "", name)


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
    options["seed"] = checkpoint.manifest["config"].get("seed", options.get("seed"))
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


def metric_value(row: dict, name: str) -> float | None:
    metrics = row["metrics"]
    older = metric_spec(name).older
    value = metrics.get(name, metrics.get(older) if older else None)
    return None if value is None else float(value)


def report_metrics(rows: list[dict]) -> list[str]:
    """The metrics these evals have, in the report's order (per-field persona recall last)."""
    names = [m.name for m in METRICS if any(metric_value(r, m.name) is not None for r in rows)]
    fields = dict.fromkeys(k for r in rows for k in r["metrics"] if k.startswith(FIELD_RECALL))
    return names + list(fields)


def summarize(rows: list[dict], keys: list[str]) -> list[dict]:
    """One entry per group: its options, label, eval rows, seeds, and per metric (mean, std, n) over seeds;
    then each weighted-loss group's gains and paired differences vs its CE group."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row["options"].get(k) for k in keys), []).append(row)
    metrics = report_metrics(rows)
    summary = []
    for values, members in sorted(groups.items(), key=lambda kv: json.dumps(kv[0], default=str)):
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


def non_loss_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if k != "loss" and not k.startswith("loss.")}


def baseline_of(entry: dict, summary: list[dict]) -> dict | None:
    """The CE group equal to `entry` in every non-loss setting."""
    if entry["options"].get("loss") == "ce":
        return None
    return next(
        (
            b
            for b in summary
            if b["options"].get("loss") == "ce"
            and non_loss_options(b["options"]) == non_loss_options(entry["options"])
        ),
        None,
    )


def add_gains(summary: list[dict], metrics: list[str]) -> None:
    """Relative change of each weighted-loss group's means vs its CE group (method / CE − 1) and the paired
    difference with its hierarchical interval, for every metric with per-example rows."""
    for entry in summary:
        baseline = baseline_of(entry, summary)
        if baseline is None:
            continue
        mine, theirs = entry["values"], baseline["values"]
        entry["gain"] = {
            m: mine[m][0] / theirs[m][0] - 1.0 for m in metrics if m in mine and m in theirs and theirs[m][0]
        }
        differences = {m: paired_difference(entry["rows"], baseline["rows"], m) for m in metrics}
        entry["paired"] = {m: found for m, found in differences.items() if found}


def paired_difference(rows: list[dict], baseline_rows: list[dict], metric: str, seed: int = 0):
    """Mean over seeds of (method − CE) on `metric` over the test examples both sides have, with a 95%
    percentile interval from a hierarchical bootstrap: the seed pairs are resampled with replacement, then,
    for each drawn pair, the test users (each with all of their targets; examples when the rows carry no user
    ids), the same users on both sides of the pair. Ratio metrics (token accuracies, NLL, persona rates) are
    pooled over the drawn users' counts, as the metric itself is. None without seed pairs or per-example data.
    """
    sums = metric_spec(metric).sums
    if sums is None:
        return None
    by_seed = {r["options"]["seed"]: r for r in baseline_rows}
    pairs = [(r, by_seed[r["options"]["seed"]]) for r in rows if r["options"]["seed"] in by_seed]
    pairs = [(a, b) for a, b in pairs if a["examples"] and b["examples"]]
    if not pairs:
        return None
    ids = sorted(set.intersection(*(set(a["examples"]) & set(b["examples"]) for a, b in pairs)))
    if not ids:
        return None
    per_example = []  # [pair][side] -> (examples, 2): numerator, denominator
    for pair in pairs:
        sides = []
        for row in pair:
            found = [sums(row["examples"][i]) for i in ids]
            if any(f is None for f in found):
                return None  # evals from before this metric's per-example rows
            sides.append(found)
        per_example.append(sides)
    values = np.array(per_example, dtype=float)  # (pairs, 2, examples, 2)
    users = [pairs[0][0]["examples"][i].get("user_id") for i in ids]
    level = "users" if None not in users else "examples"
    clusters = users if level == "users" else ids
    names = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
    member = np.zeros((len(ids), len(names)))
    member[np.arange(len(ids)), [names[c] for c in clusters]] = 1.0
    per_user = np.einsum("psek,eu->psku", values, member)  # (pairs, 2 sides, num/den, users)
    point = ratios(per_user.sum(-1))  # (pairs, 2)
    low, high = np.nanpercentile(hierarchical_bootstrap(per_user, seed), [2.5, 97.5])
    return {
        "diff": float(np.mean(point[:, 0] - point[:, 1])),
        "low": float(low),
        "high": float(high),
        "pairs": len(pairs),
        "n": len(ids),
        "users": len(names) if level == "users" else None,
        "level": level,
    }


def ratios(totals: np.ndarray) -> np.ndarray:
    """numerator / denominator over the last axis (NaN where nothing was counted)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(totals[..., 1] > 0, totals[..., 0] / totals[..., 1], np.nan)


def hierarchical_bootstrap(per_user: np.ndarray, seed: int = 0) -> np.ndarray:
    """Bootstrap draws of the mean over seed pairs of (method − CE). ``per_user``: (pairs, 2 sides,
    numerator/denominator, users) sums. Each draw resamples the seed pairs with replacement, then for each
    drawn pair the users with replacement (a multinomial count per user), the same users on both sides."""
    n_pairs, n_users = per_user.shape[0], per_user.shape[-1]
    rng = np.random.default_rng(seed)
    seed_draw = rng.integers(0, n_pairs, size=(BOOTSTRAP_SAMPLES, n_pairs))
    counts = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=(BOOTSTRAP_SAMPLES, n_pairs))
    drawn = np.empty((BOOTSTRAP_SAMPLES, n_pairs, 2))
    for p in range(n_pairs):  # each drawn seed pair with its own user resample
        totals = np.einsum("bju,sku->bjsk", counts.astype(float), per_user[p])
        chosen = seed_draw == p
        drawn[chosen] = ratios(totals)[chosen]
    return np.nanmean(drawn[..., 0] - drawn[..., 1], axis=1)


def excludes_zero(found: dict) -> bool:
    return found["low"] > 0 or found["high"] < 0


def format_difference(found: dict, digits: int = 4) -> str:
    """`+0.0123 [-0.0040, +0.0290]`, starred when the interval excludes zero."""
    star = "*" if excludes_zero(found) else ""
    return f"{found['diff']:+.{digits}f} [{found['low']:+.{digits}f}, {found['high']:+.{digits}f}]{star}"


def format_value(value: tuple, digits: int = 4) -> str:
    mean, std, _ = value
    digits = 1 if abs(mean) >= 10 else digits  # lengths in words
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def number(value: float | int | None) -> str:
    """A CSV cell: the number (6 significant digits), or empty."""
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def interval_level(summary: list[dict]) -> str:
    levels = {f["level"] for e in summary for f in e.get("paired", {}).values()}
    if not levels:
        return "none"
    return "seeds, then users" if levels == {"users"} else "seeds, then examples (no user ids in some evals)"


def csv_table(summary: list[dict], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    """Numbers only: per metric its mean, std, n (evals), gain, Δ and the interval's ends."""
    metrics = list(dict.fromkeys(m for e in summary for m in e["values"]))
    header = ["label", *keys, "seeds", "n_evals", "n_examples", "n_users", "ci_resampled"]
    for m in metrics:
        header += [f"{m}_{part}" for part in ("mean", "std", "n", "gain", "delta", "ci_low", "ci_high")]
    body = []
    for entry in summary:
        cells = [entry["label"], *(str(entry["options"][k]) for k in keys)]
        cells += [",".join(map(str, entry["seeds"])), str(entry["n"]), number(entry["examples"])]
        cells.append(number(entry["users"]))
        levels = sorted({found["level"] for found in entry.get("paired", {}).values()})
        cells.append("; ".join(f"seeds, then {level}" for level in levels))  # what the Δ intervals resample
        for m in metrics:
            mean, std, n = entry["values"].get(m, (None, None, None))
            found = entry.get("paired", {}).get(m, {})
            cells += [number(mean), number(std), number(n), number(entry.get("gain", {}).get(m))]
            cells += [number(found.get("diff")), number(found.get("low")), number(found.get("high"))]
        body.append(cells)
    return header, body


def arrow(metric: str) -> str:
    return {"higher": " ↑", "lower": " ↓"}.get(metric_spec(metric).better, "")


def markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def describe(summary: list[dict], keys: list[str]) -> str:
    """`12 evals in 4 groups (swept: loss, loss.clip_min); test set: 60 targets from 30 users; seeds 0,1,2`"""
    evals = sum(e["n"] for e in summary)
    examples = sorted({e["examples"] for e in summary})
    users = sorted({e["users"] for e in summary if e["users"] is not None})
    test = f"{'/'.join(map(str, examples))} targets"
    if users:
        test += f" from {'/'.join(map(str, users))} users"
    seeds = sorted({s for e in summary for s in e["seeds"]})
    return (
        f"{evals} evals in {len(summary)} groups (swept: {', '.join(keys)}); test set: {test}; "
        f"seeds {','.join(map(str, seeds))}"
    )


def markdown_report(summary: list[dict], keys: list[str], title: str, sources: list[str]) -> str:
    present = {m for e in summary for m in e["values"]}
    paired = any(e.get("paired") for e in summary)
    lines = [f"# {title}", ""]
    lines += [f"Source: {', '.join(f'`{s}`' for s in sources)}", "", describe(summary, keys) + ".", ""]
    tables = dict(SECTIONS)
    fields = [m for m in dict.fromkeys(m for e in summary for m in e["values"]) if m.startswith(FIELD_RECALL)]
    if fields:
        tables["Persona recall by field"] = tuple(fields)
    for section, names in tables.items():
        shown = [m for m in names if m in present]
        if not shown:
            continue
        lines += [f"## {section}", "", "Mean ± std over seeds (gain vs CE in parentheses)."]
        header = ["group", "seeds", *(f"{m.removeprefix(FIELD_RECALL)}{arrow(m)}" for m in shown)]
        body = []
        for entry in summary:
            cells = [entry["label"], ",".join(map(str, entry["seeds"]))]
            for m in shown:
                cell = format_value(entry["values"][m]) if m in entry["values"] else ""
                if m in entry.get("gain", {}):
                    cell += f" ({entry['gain'][m]:+.1%})"
                cells.append(cell)
            body.append(cells)
        lines += ["", *markdown_table(header, body), ""]
        with_difference = [m for m in shown if any(m in e.get("paired", {}) for e in summary)]
        if with_difference:
            lines += ["Δ vs CE [95% interval]; * the interval excludes 0.", ""]
            header = ["group", *(f"Δ {m.removeprefix(FIELD_RECALL)}{arrow(m)}" for m in with_difference)]
            body = [
                [
                    e["label"],
                    *(format_difference(e["paired"][m]) if m in e["paired"] else "" for m in with_difference),
                ]
                for e in summary
                if e.get("paired")
            ]
            lines += markdown_table(header, body) + [""]
    lines += ["## Legend", ""]
    lines += [
        "- **mean ± std**: over the seeds of a group (one eval per seed); `seeds` lists them.",
        "- **gain** (in parentheses): relative change of the group's mean vs the matching CE group's mean, "
        "method / CE − 1 (same settings except the loss). For ↓ metrics a negative gain is the improvement.",
        "- **Δ**: the paired difference, mean over seeds of (method − CE) on the same test examples, with a "
        f"95% percentile interval from a hierarchical bootstrap ({BOOTSTRAP_SAMPLES} draws; resampled: "
        f"{interval_level(summary)}, all of a user's targets together, the same draw on both sides).",
        "- **\\***: that interval excludes 0. ↑ / ↓: higher / lower is better.",
    ]
    if not paired:
        lines.append("- No Δ here: no CE group with the same settings (and seeds) to pair with.")
    lines += ["", "Metrics:", ""]
    lines += [f"- `{m.name}`{arrow(m.name)}: {m.about}" for m in METRICS if m.name in present]
    if fields:
        lines.append(
            f"- `{FIELD_RECALL}<field>`: persona recall of one field, over the targets that write it"
        )
    return "\n".join(lines) + "\n"


def console_text(summary: list[dict], keys: list[str], title: str) -> str:
    """A narrow, plain-text view for logs and pipes: one block per headline metric, a line per group
    (labelled with its swept settings), its mean ± std over seeds and, vs CE, Δ with its interval."""
    present = {m for e in summary for m in e["values"]}
    width = max(len(e["label"]) for e in summary)
    lines = [title, describe(summary, keys)]
    if any(e.get("paired") for e in summary):
        lines.append(f"Δ: method − CE, mean over seeds [95% interval; resampled: {interval_level(summary)}]; "
                     "* excludes 0")  # fmt: skip
    for metric in (m for m in CONSOLE if m in present):
        better = metric_spec(metric).better
        lines += ["", f"{metric}" + (f" ({better} is better)" if better else "")]
        for entry in summary:
            if metric not in entry["values"]:
                continue
            line = f"  {entry['label']:<{width}}  {format_value(entry['values'][metric]):>17}"
            if metric in entry.get("paired", {}):
                line += f"  Δ {format_difference(entry['paired'][metric])}"
            lines.append(line.rstrip())
    return "\n".join(lines)


def default_title(sources: list[str]) -> str:
    names = [Path(s).name or s for s in sources]
    return f"Report: {', '.join(names)}"


def write_tables(summary: list[dict], keys: list[str], out_dir: Path, sources=(), title=None) -> str:
    """report.csv (numbers), report.md (title, source, sizes, tables, legend); returns the console text."""
    title = title or default_title(list(sources))
    header, body = csv_table(summary, keys)
    with open(out_dir / "report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(body)
    (out_dir / "report.md").write_text(markdown_report(summary, keys, title, list(sources)))
    return console_text(summary, keys, title)


def make_report(store: ArtifactStore, refs: list[str], report_cfg) -> tuple[str, Path, int]:
    """The `report` stage's work: tables and plots under report.out_dir; returns the console text, the
    directory and the number of evals."""
    rows = [eval_row(store, e) for e in collect_evals(store, refs)]
    keys = group_keys(rows)
    summary = summarize(rows, keys)
    out_dir = Path(report_cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = write_tables(summary, keys, out_dir, refs, report_cfg.get("title"))
    present = {m for e in summary for m in e["values"]}
    plotted = [m for m in report_cfg.plot_metrics if m in present]
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
    text += aloe_report(store, summary, out_dir)  # task=aloe evals: AL(k) with intervals, AL(k) vs k
    return text, out_dir, len(rows)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


LEGEND = {"fontsize": 8, "frameon": False}


def plot_metric_vs(summary: list[dict], metric: str, x_key: str, path: Path, log_x: bool = False) -> None:
    """`metric` (mean ± std over seeds) against one swept option, a line per setting of the others:
    loss.alpha (CE drawn as its own labelled reference: a dashed line with its ± std band) or train.lr
    (where CE breaks: CE is a line of its own)."""
    plt = pyplot()
    alpha_plot = x_key == "loss.alpha"
    series: dict[str, list[tuple]] = {}
    references = []
    for entry in summary:
        options = entry["options"]
        if metric not in entry["values"]:
            continue
        mean, std, _ = entry["values"][metric]
        if alpha_plot and options.get("loss") == "ce":
            references.append((entry, mean, std or 0.0))
            continue
        if x_key not in options and not alpha_plot:
            continue
        label = ", ".join(part for part in entry["label"].split(", ") if not part.startswith(f"{x_key}="))
        series.setdefault(label or metric, []).append((float(options.get(x_key, 1.0)), mean, std or 0.0))
    fig, ax = plt.subplots(figsize=(6, 4))
    for index, (label, points) in enumerate(sorted(series.items())):
        xs, ys, errs = zip(*sorted(points), strict=True)
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, color=f"C{index}", label=label)
    for index, (entry, mean, std) in enumerate(references):
        context = ", ".join(f"{k}={v}" for k, v in non_loss_options(entry["options"]).items())
        label = "CE (reference)" + (f", {context}" if context and len(references) > 1 else "")
        color = "black" if len(references) == 1 else f"C{len(series) + index}"
        ax.axhline(mean, linestyle="--", color=color, linewidth=1.2, label=label)
        if std:
            ax.axhspan(mean - std, mean + std, color=color, alpha=0.1)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("loss.alpha (PerCE strength)" if alpha_plot else x_key)
    ax.set_ylabel(metric + arrow(metric))
    ax.set_title(f"{metric} vs {x_key} (mean ± std over seeds)", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, **LEGEND)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_differences(summary: list[dict], metrics: list[str], path: Path) -> None:
    """Δ vs CE with its 95% interval, one panel per metric, a row per weighted-loss group: the report's
    comparison at a glance (filled: the interval excludes 0)."""
    plt = pyplot()
    metrics = [m for m in metrics if any(m in e.get("paired", {}) for e in summary)]
    groups = [e for e in summary if e.get("paired")]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(2.8 * len(metrics) + 2.5, 0.45 * len(groups) + 1.4), squeeze=False,
        sharey=True, layout="constrained",
    )  # fmt: skip
    for ax, metric in zip(axes[0], metrics, strict=True):
        for row, entry in enumerate(groups):
            found = entry["paired"].get(metric)
            if found is None:
                continue
            error = [[found["diff"] - found["low"]], [found["high"] - found["diff"]]]
            ax.errorbar(
                found["diff"], row, xerr=error, fmt="o", capsize=3, color=f"C{row}",
                markerfacecolor=f"C{row}" if excludes_zero(found) else "white",
            )  # fmt: skip
        ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(f"Δ {metric}{arrow(metric)}", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0][0].set_yticks(range(len(groups)), [e["label"] for e in groups], fontsize=8)
    axes[0][0].invert_yaxis()
    title = f"method − CE, mean over seeds, 95% interval ({interval_level(summary)}); filled: excludes 0"
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_transfer_matrix(summary: list[dict], metric: str, path: Path) -> None:
    """Train task x eval task, one panel per loss (mean over seeds), plus each weighted loss minus CE. The
    value panels share one colour scale, and the difference panels one symmetric scale around 0, so equal
    colours are equal numbers across panels."""
    plt = pyplot()
    by_loss: dict[str, dict[tuple[str, str], float]] = {}
    for entry in summary:
        if metric in entry["values"]:
            options = entry["options"]
            cell = (options["train_task"], options["task.name"])
            by_loss.setdefault(str(options.get("loss", "?")), {})[cell] = entry["values"][metric][0]
    panels = dict(sorted(by_loss.items()))
    if "ce" in by_loss:
        ce = by_loss["ce"]
        for loss, cells in sorted(by_loss.items()):
            if loss != "ce":
                panels[f"{loss} − ce"] = {c: v - ce[c] for c, v in cells.items() if c in ce}
    tasks = sorted({t for cells in by_loss.values() for cell in cells for t in cell})
    values = [v for title, cells in panels.items() if " − " not in title for v in cells.values()]
    differences = [abs(v) for title, cells in panels.items() if " − " in title for v in cells.values()]
    scales = {
        False: {"cmap": "viridis", "vmin": min(values), "vmax": max(values)},
        True: {
            "cmap": "RdBu",
            "vmin": -max(differences, default=1e-9),
            "vmax": max(differences, default=1e-9),
        },
    }
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.4 * len(panels) + 1.6, 3.8), squeeze=False, layout="constrained"
    )
    images = {}
    for ax, (title, cells) in zip(axes[0], panels.items(), strict=True):
        grid = np.full((len(tasks), len(tasks)), np.nan)
        for (train_task, eval_task), value in cells.items():
            grid[tasks.index(train_task), tasks.index(eval_task)] = value
        difference = " − " in title
        images[difference] = image = ax.imshow(grid, **scales[difference])
        for i in range(len(tasks)):
            for j in range(len(tasks)):
                if not np.isnan(grid[i, j]):
                    shade = image.norm(grid[i, j])  # 0..1 on the panel's colour scale
                    dark = abs(shade - 0.5) > 0.3 if difference else shade < 0.6
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:+.3f}" if difference else f"{grid[i, j]:.3f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if dark else "black",
                    )
        short = [t.removeprefix("persona_") for t in tasks]
        ax.set_xticks(range(len(tasks)), short, fontsize=8)
        ax.set_yticks(range(len(tasks)), short, fontsize=8)
        ax.set_xlabel("eval task")
        if ax is axes[0][0]:
            ax.set_ylabel("train task")
        ax.set_title(title, fontsize=9)
    for difference, image in images.items():
        label = f"Δ {metric} (method − CE)" if difference else metric
        kind = [ax for ax, title in zip(axes[0], panels, strict=True) if (" − " in title) == difference]
        fig.colorbar(image, ax=kind, fraction=0.046, label=label)
    fig.suptitle(
        f"{metric}: train task x eval task (mean over seeds; one colour scale per kind)", fontsize=10
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)


FEW_LOGGED_STEPS = 5  # a curve with fewer logged steps than this gets markers


def plot_token_losses(summary: list[dict], path: Path) -> None:
    """Personal vs non-personal token loss over training steps, one colour per group (one legend entry per
    group: the line style says which tokens), seeds averaged."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for index, entry in enumerate(summary):
        labelled = False
        for key, style in (("personal_loss", "-"), ("nonpersonal_loss", ":")):
            by_step: dict[int, list[float]] = {}
            for row in entry["rows"]:
                for log in row["history"]:
                    if key in log:
                        by_step.setdefault(log["step"], []).append(log[key])
            if by_step:
                steps = sorted(by_step)
                few = len(steps) < FEW_LOGGED_STEPS  # a one-point line draws nothing
                ax.plot(
                    steps,
                    [statistics.mean(by_step[s]) for s in steps],
                    style,
                    color=f"C{index}",
                    marker="o" if few else None,
                    markerfacecolor=f"C{index}" if style == "-" else "none",
                    label="_nolegend_" if labelled else entry["label"],
                )
                labelled = True
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("token NLL")
    ax.set_title("personal (solid) vs non-personal (dotted) target-token loss", fontsize=10)
    if ax.lines:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, **LEGEND)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
