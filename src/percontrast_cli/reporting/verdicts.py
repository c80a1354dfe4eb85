"""What a report lets one conclude: the declared primary metric (`report.primary`; every other metric is
secondary), an equivalence test (`report.margin=<metric>:<δ>`) instead of reading a non-significant
difference as "no change", how many of the report's intervals would exclude 0 by chance alone, and the
judge's system-level agreement with persona recall across the report's checkpoints.

The equivalence test is a TOST (two one-sided tests) at the level of the report's interval: each one-sided
test at (1 − level) / 2, which holds exactly when the percentile interval lies inside (−δ, +δ). The printed
interval therefore shows the verdict: "equivalent within δ" when it does, "not shown equivalent" otherwise.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from percontrast_cli.reporting.stats import (
    LEVEL,
    baseline_of,
    excludes_zero,
    format_difference,
    identical,
    non_loss_options,
)
from percontrast_cli.runtime.errors import PercontrastError


@dataclass(frozen=True)
class Declared:
    """report.primary and report.margin, parsed (nothing declared: every field None)."""

    primary: str | None = None
    margin_metric: str | None = None
    margin: float | None = None

    @classmethod
    def from_config(cls, report_cfg) -> Declared:
        primary = report_cfg.get("primary")
        margin = report_cfg.get("margin")
        if primary is not None and (not isinstance(primary, str) or not primary.strip()):
            raise PercontrastError(
                f"report.primary={primary!r} must name a metric (e.g. persona_recall_slot)"
            )
        if margin is None:
            return cls(primary)
        metric, _, delta = str(margin).rpartition(":")
        try:
            value = float(delta)
        except ValueError:
            value = float("nan")
        if not metric or not value > 0 or value == float("inf"):
            raise PercontrastError(
                f"report.margin={margin!r} must be <metric>:<δ> with δ > 0 (e.g. report.margin=rougeL:0.02)"
            )
        return cls(primary, metric, value)

    def check(self, present: set[str]) -> None:
        """One-line errors for a declared metric the evals do not have."""
        for option, metric in (("report.primary", self.primary), ("report.margin", self.margin_metric)):
            if metric is not None and metric not in present:
                known = ", ".join(sorted(present))
                raise PercontrastError(f"{option}: these evals have no metric {metric!r}; they have: {known}")

    def role(self, metric: str) -> str:
        """` (primary)`, ` (secondary)` or nothing (no primary declared): a table header's suffix."""
        if self.primary is None:
            return ""
        return " (primary)" if metric == self.primary else " (secondary)"


def equivalence(found: dict, margin: float) -> str:
    """TOST at the interval's level: is the difference inside (−margin, +margin)?"""
    if -margin < found["low"] and found["high"] < margin:
        return f"equivalent within ±{margin:g}"
    return f"not shown equivalent within ±{margin:g}"


def intervals(summary: list[dict]) -> list[dict]:
    return [found for entry in summary for found in entry.get("paired", {}).values()]


def chance_line(summary: list[dict], declared: Declared) -> str | None:
    """`28 Δ intervals here, 6 exclude 0; at 95% about 1.4 would by chance alone if nothing changed.`"""
    every = intervals(summary)
    found = [f for f in every if not identical(f)]
    if not every:
        return None
    excluding = sum(excludes_zero(f) for f in found)
    expected = (1 - LEVEL) * len(found)
    line = (
        f"{len(found)} Δ intervals in this report, {excluding} exclude 0; at {LEVEL:.0%}, about "
        f"{expected:.1f} of them would exclude 0 by chance alone if nothing changed"
    )
    if same := len(every) - len(found):
        line += f" (not counted: {same} more that are 0 on every example, shown as `identical`)"
    if declared.primary is not None:
        line += f". Primary metric: {declared.primary}; every other metric is secondary (exploratory)"
    return line + "."


def judge_system_line(summary: list[dict]) -> str | None:
    """The judge's system-level agreement: Spearman's correlation, over the report's evals (checkpoints),
    between each eval's mean judge score and its persona recall (None with fewer than 3 such evals)."""
    pairs = [
        (row["metrics"]["judge_score"], row["metrics"]["persona_recall"])
        for entry in summary
        for row in entry["rows"]
        if "judge_score" in row["metrics"] and "persona_recall" in row["metrics"]
    ]
    if len(pairs) < 3:
        return None
    scores, recalls = zip(*pairs, strict=True)
    if len(set(scores)) < 2 or len(set(recalls)) < 2:
        return f"judge system-level agreement over {len(pairs)} evals: undefined (constant scores or recall)"
    from scipy.stats import spearmanr  # here: scipy takes a while to import, and few reports need it

    rho = float(spearmanr(scores, recalls).statistic)
    return (
        f"judge system-level agreement: Spearman {rho:+.2f} between the mean judge score and persona recall "
        f"over {len(pairs)} evals (checkpoints)"
    )


ZERO_HINTS = {  # why a metric can be 0 everywhere, and what to do about it
    "persona_slot_sentence_rate": "no generation wrote a known paraphrase of a slot's template sentence, so "
    "slot-conditional accuracy (persona_slot_accuracy) is undefined here; the values are still counted by "
    "persona_recall_slot (add the paraphrases the models write to the task's pool file to measure it)",
}


ZERO_IS_HEALTHY = {"empty_generations"}  # 0 everywhere is the expected state, not a blind metric


def zero_lines(summary: list[dict]) -> list[str]:
    """A line per metric that is 0 in every eval of the report: it cannot tell these runs apart, and a reader
    should not take its columns for a measured tie."""
    rows = {row["id"]: row for entry in summary for row in entry["rows"] if "id" in row}
    if len(rows) < 2:
        return []
    names = dict.fromkeys(m for row in rows.values() for m in row["metrics"])
    lines = []
    for metric in names:
        values = [row["metrics"].get(metric) for row in rows.values()]
        if metric not in ZERO_IS_HEALTHY and all(isinstance(v, int | float) and v == 0 for v in values):
            hint = ZERO_HINTS.get(metric, "it cannot tell these runs apart")
            lines.append(f"{metric} is 0 in every one of the {len(rows)} evals: {hint}")
    return lines


def machine_line(summary: list[dict]) -> str | None:
    """A line when the report's checkpoints were trained on more than one machine: retraining the same id on
    another CPU is not bit-identical (docs/identity.md), so a Δ between groups made on different machines
    carries that difference as well as the method's."""
    rows = {row["id"]: row for entry in summary for row in entry["rows"] if "id" in row}
    # a base model's eval (machine None) was not trained here: where it was converted does not count
    counts = Counter(row["machine"] for row in rows.values() if row.get("machine"))
    if len(counts) < 2:
        return None
    made = ", ".join(f"{name}: {n}" for name, n in counts.most_common())
    return (
        f"the checkpoints were trained on {len(counts)} machines ({made}): floats differ across machines, so "
        "a Δ between groups from different ones carries that difference too; retrain on one to compare"
    )


def unpaired_lines(summary: list[dict]) -> list[str]:
    """A line per weighted-loss group that has no Δ because no CE group matches it in every other setting,
    when the report has CE groups: a comparison the reader expects is missing, and the settings that keep it
    apart are named (rerun CE with them, or leave the odd setting out of the evals)."""
    ce_groups = [e for e in summary if e["options"].get("loss") == "ce"]
    lines = []
    for entry in summary:
        if not ce_groups or entry["options"].get("loss") in ("ce", "none") or baseline_of(entry, summary):
            continue
        mine = non_loss_options(entry["options"])

        def differences(ce: dict, mine: dict = mine) -> list[str]:
            theirs = non_loss_options(ce["options"])
            return [
                f"{k}={mine.get(k)} vs CE's {theirs.get(k)}"
                for k in sorted({*mine, *theirs})
                if mine.get(k) != theirs.get(k)
            ]

        nearest = min((differences(ce) for ce in ce_groups), key=len)
        lines.append(
            f"WARNING {entry['label']}: no Δ vs CE, no CE group has the same settings (nearest differs in "
            f"{'; '.join(nearest)}): run CE with these settings, or report without the odd evals"
        )
    return lines


def declared_lines(summary: list[dict], declared: Declared) -> list[str]:
    """The lines that answer the declared question: the primary metric's Δ per group, the TOST verdicts, the
    chance line, the judge's system-level agreement and the metrics that are 0 everywhere (for report.md and
    the console alike)."""
    lines = []
    labelled = [e for e in summary if e.get("paired")]
    if declared.primary is not None:
        for entry in labelled:
            if (found := entry["paired"].get(declared.primary)) is not None:
                lines.append(f"primary {declared.primary}, {entry['label']}: Δ {format_difference(found)}")
    if declared.margin_metric is not None:
        for entry in labelled:
            if (found := entry["paired"].get(declared.margin_metric)) is not None:
                difference, verdict = format_difference(found), equivalence(found, declared.margin)
                lines.append(f"TOST {declared.margin_metric}, {entry['label']}: Δ {difference}: {verdict}")
    if (chance := chance_line(summary, declared)) is not None:
        lines.append(chance)
    if (judged := judge_system_line(summary)) is not None:
        lines.append(judged)
    if (machines := machine_line(summary)) is not None:
        lines.append(machines)
    return unpaired_lines(summary) + lines + zero_lines(summary)


NOTHING_DECLARED = Declared()
