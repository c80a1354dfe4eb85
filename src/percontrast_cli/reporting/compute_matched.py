"""Learning curves compared at equal compute: a weighted loss's step costs more than CE's (PerCE's extra,
profile-free forward pass), so "PerCE at step k vs CE at step k" flatters CE's cost. Here each weighted-loss
curve point meets the two CE points of its run setting whose measured training seconds bracket its own: CE
with no more seconds and CE with no fewer. A Δ in the method's favour against CE with *more* seconds is a gain
at no more compute; a Δ in CE's favour against CE with *fewer* seconds is a loss at no less compute; anything
else is not settled at the points the curves have (no interpolation: every Δ is a paired bootstrap between
two evaluated checkpoints, the same seeds and users on both sides)."""

from __future__ import annotations

from percontrast_cli.reporting.curves import STEP, x_value
from percontrast_cli.reporting.metric_table import arrow
from percontrast_cli.reporting.stats import (
    format_difference,
    interval_description,
    non_loss_options,
    paired_difference,
)
from percontrast_cli.reporting.tables import markdown_table

SECONDS = "train_seconds"


def run_setting(entry: dict) -> dict:
    """What a curve point shares with the CE points it may meet: every option but the loss and the step."""
    return {k: v for k, v in non_loss_options(entry["options"]).items() if k != STEP}


def bracketing_ce(entry: dict, summary: list[dict]) -> list[tuple[str, dict]]:
    """The CE points of `entry`'s run setting with the most seconds up to its own ("fewer") and the fewest
    from its own up ("more"); one or none where the curve does not reach that far."""
    seconds = x_value(entry, SECONDS)
    ce = [
        e
        for e in summary
        if e["options"].get("loss") == "ce"
        and STEP in e["options"]
        and x_value(e, SECONDS) is not None
        and run_setting(e) == run_setting(entry)
    ]
    fewer = [e for e in ce if x_value(e, SECONDS) <= seconds]
    more = [e for e in ce if x_value(e, SECONDS) >= seconds]
    found = []
    if fewer:
        found.append(("fewer", max(fewer, key=lambda e: x_value(e, SECONDS))))
    if more:
        found.append(("more", min(more, key=lambda e: x_value(e, SECONDS))))
    return found


def compute_matched(summary: list[dict], metrics: list[str]) -> list[dict]:
    """Per weighted-loss curve point after step 0 with measured seconds, per bracketing CE point: the paired
    difference (method − CE) of each metric with the report's interval."""
    comparisons = []
    for entry in summary:
        seconds = x_value(entry, SECONDS) if STEP in entry["options"] else None
        if entry["options"].get("loss") == "ce" or not seconds:
            continue
        for side, ce in bracketing_ce(entry, summary):
            found = {m: paired_difference(entry["rows"], ce["rows"], m) for m in metrics}
            paired = {m: f for m, f in found.items() if f is not None}
            if paired:
                comparisons.append({"point": entry, "ce": ce, "ce_has": side, "paired": paired})
    return comparisons


def compute_matched_section(summary: list[dict], metrics: list[str]) -> list[str]:
    """report.md's section: a row per (point, CE point) pair; empty without curves that measured seconds."""
    comparisons = compute_matched(summary, metrics)
    if not comparisons:
        return []
    shown = [m for m in metrics if any(m in c["paired"] for c in comparisons)]
    header = [
        "point",
        "its seconds",
        "CE point",
        "CE seconds",
        "CE has",
        *(f"Δ {m}{arrow(m)}" for m in shown),
    ]
    body = []
    for c in comparisons:
        point, ce = c["point"], c["ce"]
        body.append(
            [
                point["label"],
                f"{x_value(point, SECONDS):.0f}",
                f"step {ce['options'][STEP]}",
                f"{x_value(ce, SECONDS):.0f}",
                f"{c['ce_has']} seconds",
                *(format_difference(c["paired"][m]) if m in c["paired"] else "" for m in shown),
            ]
        )
    return [
        "## Compute-matched: each point vs the CE points around its measured training seconds",
        "",
        "Seconds: mean over seeds of the measured training time up to the point (a weighted loss's extra "
        "forward pass included). Against CE with **more** seconds, a Δ in the method's favour is a gain "
        "at no more compute; against CE with **fewer** seconds, a Δ in CE's favour is a loss at no less "
        f"compute; the rest is unsettled at these points. Δ: method − CE [{interval_description(summary)}]; "
        "* the interval excludes 0.",
        "",
        *markdown_table(header, body),
        "",
    ]
