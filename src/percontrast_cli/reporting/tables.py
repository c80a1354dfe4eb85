"""The report as text: report.csv (numbers), report.md (tables and legend) and the console's narrow view."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

from percontrast_cli.reporting.metric_table import (
    CONSOLE,
    FAMILIES,
    METRICS,
    SECTIONS,
    arrow,
    family,
    metric_spec,
)
from percontrast_cli.reporting.stats import format_difference, interval_description, resampled
from percontrast_cli.reporting.verdicts import NOTHING_DECLARED, Declared, declared_lines


def format_value(value: tuple, digits: int = 4) -> str:
    mean, std, _ = value
    digits = 1 if abs(mean) >= 10 else digits  # lengths in words
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def number(value: float | int | None) -> str:
    """A CSV cell: the number (6 significant digits), or empty."""
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6g}"


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
        kinds = sorted({resampled(found) for found in entry.get("paired", {}).values()})
        cells.append("; ".join(kinds))  # what the Δ intervals resample
        for m in metrics:
            mean, std, n = entry["values"].get(m, (None, None, None))
            found = entry.get("paired", {}).get(m, {})
            cells += [number(mean), number(std), number(n), number(entry.get("gain", {}).get(m))]
            cells += [number(found.get("diff")), number(found.get("low")), number(found.get("high"))]
        body.append(cells)
    return header, body


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


def markdown_report(
    summary: list[dict],
    keys: list[str],
    title: str,
    sources: list[str],
    declared: Declared = NOTHING_DECLARED,
    sections: list[str] = (),
) -> str:
    present = {m for e in summary for m in e["values"]}
    paired = any(e.get("paired") for e in summary)
    lines = [f"# {title}", ""]
    lines += [f"Source: {', '.join(f'`{s}`' for s in sources)}", "", describe(summary, keys) + ".", ""]
    if answers := declared_lines(summary, declared):
        lines += ["## What this report can conclude", ""]
        lines += [f"- {line}" for line in answers] + [""]
    tables = dict(SECTIONS)
    found = list(dict.fromkeys(m for e in summary for m in e["values"]))
    families = [
        (prefix, title, about) for prefix, title, about in FAMILIES if any(family(m) == prefix for m in found)
    ]
    for prefix, title, _ in families:
        tables[title] = tuple(m for m in found if family(m) == prefix)
    for section, names in tables.items():
        shown = [m for m in names if m in present]
        if not shown:
            continue
        lines += [f"## {section}", "", "Mean ± std over seeds (gain vs CE in parentheses)."]
        header = ["group", "seeds", *(f"{short(m)}{arrow(m)}" for m in shown)]
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
            lines += [f"Δ vs CE [{interval_description(summary)}]; * the interval excludes 0.", ""]
            header = [
                "group",
                *(f"Δ {short(m)}{arrow(m)}{declared.role(m)}" for m in with_difference),
            ]
            body = [
                [
                    e["label"],
                    *(format_difference(e["paired"][m]) if m in e["paired"] else "" for m in with_difference),
                ]
                for e in summary
                if e.get("paired")
            ]
            lines += markdown_table(header, body) + [""]
    lines += sections  # e.g. the curves' compute-matched section, before the legend
    lines += ["## Legend", ""]
    lines += [
        "- **mean ± std**: over the seeds of a group (one eval per seed); `seeds` lists them.",
        "- **gain** (in parentheses): relative change of the group's mean vs the matching CE group's mean, "
        "method / CE − 1 (same settings except the loss). For ↓ metrics a negative gain is the improvement.",
        "- **Δ**: the paired difference, mean over seeds of (method − CE) on the same test targets (the same "
        f"seed on both sides), with its interval: {interval_description(summary)}. Crossed: each draw "
        "resamples the seeds and, once, the test users, and scores every drawn seed on that same user "
        "multiset (the users are shared by all seeds); nested (only when the seeds met different users): "
        "each seed's own users. A user is drawn with all of their targets (a target alone when the evals "
        "carry no user ids); the same draw on both sides.",
        "- **\\***: that interval excludes 0. `identical`: 0 on every example (the same checkpoint's "
        "teacher-forced metrics under context-aware decoding, a metric 0 on both sides); not counted as an "
        "interval. ↑ / ↓: higher / lower is better.",
    ]
    if declared.margin_metric is not None:
        lines.append(
            f"- **TOST** (`report.margin={declared.margin_metric}:{declared.margin:g}`): two one-sided tests "
            "at the interval's level; equivalent within ±δ when the whole interval lies inside (−δ, +δ), "
            "else not shown equivalent (a Δ whose interval includes 0 is not evidence of no change)."
        )
    if not paired:
        lines.append("- No Δ here: no CE group with the same settings (and seeds) to pair with.")
    lines += ["", "Metrics:", ""]
    lines += [f"- `{m.name}`{arrow(m.name)}: {m.about}" for m in METRICS if m.name in present]
    lines += [f"- `{prefix}<name>`: {about}" for prefix, _, about in families]
    return "\n".join(lines) + "\n"


def short(metric: str) -> str:
    """A column's name: a family's member without its prefix (`town` for persona_recall_town)."""
    prefix = family(metric)
    return metric.removeprefix(prefix) if prefix else metric


def console_text(summary: list[dict], keys: list[str], title: str, declared=NOTHING_DECLARED) -> str:
    """A narrow, plain-text view for logs and pipes: one block per headline metric, a line per group
    (labelled with its swept settings), its mean ± std over seeds and, vs CE, Δ with its interval."""
    present = {m for e in summary for m in e["values"]}
    width = max(len(e["label"]) for e in summary)
    lines = [title, describe(summary, keys)]
    if any(e.get("paired") for e in summary):
        lines.append(f"Δ: method − CE, mean over seeds [{interval_description(summary)}]; * excludes 0")
    shown = [m for m in CONSOLE if m in present]
    shown += [m for m in (declared.primary, declared.margin_metric) if m in present and m not in shown]
    for metric in shown:
        better = metric_spec(metric).better
        lines += ["", f"{metric}{declared.role(metric)}" + (f" ({better} is better)" if better else "")]
        for entry in summary:
            if metric not in entry["values"]:
                continue
            line = f"  {entry['label']:<{width}}  {format_value(entry['values'][metric]):>17}"
            if metric in entry.get("paired", {}):
                line += f"  Δ {format_difference(entry['paired'][metric])}"
            lines.append(line.rstrip())
    if answers := declared_lines(summary, declared):
        lines.append("")
        lines += [wrapped for line in answers for wrapped in textwrap.wrap(line, 108, subsequent_indent="  ")]
    return "\n".join(lines)


def default_title(sources: list[str]) -> str:
    names = [Path(s).name or s for s in sources]
    return f"Report: {', '.join(names)}"


def write_tables(
    summary: list[dict],
    keys: list[str],
    out_dir: Path,
    sources=(),
    title=None,
    declared=NOTHING_DECLARED,
    sections: list[str] = (),
) -> str:
    """report.csv (numbers), report.md (title, source, sizes, what it can conclude, tables, `sections`,
    legend); returns the console text."""
    title = title or default_title(list(sources))
    header, body = csv_table(summary, keys)
    with open(out_dir / "report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(body)
    (out_dir / "report.md").write_text(
        markdown_report(summary, keys, title, list(sources), declared, list(sections))
    )
    return console_text(summary, keys, title, declared)
