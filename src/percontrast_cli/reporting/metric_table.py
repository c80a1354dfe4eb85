"""The metrics a report knows: for each its direction, its legend line and how one test example counts
towards it (the per-example (numerator, denominator) the bootstrap resamples); the report's sections."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from percontrast_cli.evaluation.persona_metrics import SLOT_ACCURACY, SUBJECT_RECALL, breakdown_counts

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


def breakdown(name: str, needs: str = "persona_present") -> Sums:
    """A metric of persona_metrics.breakdown_counts; rows without `needs` (older evals) have none."""

    def sums(row: dict):
        if needs not in row:
            return None
        return breakdown_counts(row).get(name, (0.0, 0.0))

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
    Metric(
        "persona_recall_copy",
        "higher",
        "persona recall of the copy fields (name, greeting, sign-off, emoji: the frame of every target, "
        "written verbatim from the profile)",
        breakdown("persona_recall_copy"),
    ),
    Metric(
        "persona_recall_slot",
        "higher",
        "persona recall of the slot fields (town, brand, hobby: values that need a body sentence to carry "
        "them, and the sentences come with the request's subject)",
        breakdown("persona_recall_slot"),
    ),
    Metric(
        "persona_slot_sentence_rate",
        "higher",
        "of the slot fields the reference writes, the share for which the generation writes a known "
        "paraphrase of a sentence that carries that slot (with any value)",
        breakdown("persona_slot_sentence_rate", "persona_slot_written"),
    ),
    Metric(
        SLOT_ACCURACY,
        "higher",
        "slot-conditional accuracy: among the generation's sentences that are a known paraphrase of a "
        "slot's template sentence (the task's pool file), the share that carry this user's value",
        breakdown(SLOT_ACCURACY, "persona_slot_written"),
    ),
    Metric(
        "persona_catchphrase_rate",
        "",
        "share of generations that write the user's catchphrase (compare with the references' rate: "
        "the catchphrase is in a random 30% of them)",
        breakdown("persona_catchphrase_rate"),
    ),
    Metric(
        "persona_catchphrase_reference_rate",
        "",
        "share of references that write the catchphrase (the rate a faithful model would match)",
        breakdown("persona_catchphrase_reference_rate"),
    ),
    Metric(
        "persona_leakage_values",
        "lower",
        "leakage of cross-user values: share of open-vocabulary fields (name, town, brand, catchphrase) in "
        "which the generation writes another user's value",
        breakdown("persona_leakage_values"),
    ),
    Metric(
        "persona_style_mismatch",
        "lower",
        "share of closed-set fields (greeting, sign-off, emoji, hobby) in which the generation writes "
        "another user's choice: a wrong style choice, not a leak",
        breakdown("persona_style_mismatch"),
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
    Metric(
        "judge_score_mass_mean",
        "",
        "the probability the judge put on the score tokens 1-5 before renormalising (near 0: its scores are "
        "noise)",
        mean_of("judge_score_mass"),
    ),
    Metric(
        "judge_swap_accuracy",
        "",
        "share of persona test references the judge scores above the same reference with another user's "
        "values swapped in (0.5: chance; the same for every checkpoint, no Δ interval)",
    ),
    Metric("estimator_auroc", "higher", "PerContrast scores vs the personal spans: AUROC (no Δ interval)"),
    Metric("estimator_f1", "higher", "the same: F1 at estimator.tau (no Δ interval)"),
    Metric(
        "train_tokens",
        "",
        "training tokens fed up to the evaluated checkpoint (non-padding; PerCE's counterfactual pass not "
        "counted)",
    ),
    Metric(
        "train_seconds",
        "",
        "measured training seconds up to the evaluated checkpoint (the optimiser steps, PerCE's extra "
        "forward pass included; not logging or saving); gain: the training-time ratio vs CE",
    ),
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
        "judge_score_mass_mean",
        "judge_swap_accuracy",
    ),
    "Persona: what moved": (
        "persona_recall_copy",
        "persona_recall_slot",
        "persona_slot_sentence_rate",
        SLOT_ACCURACY,
        "persona_catchphrase_rate",
        "persona_catchphrase_reference_rate",
        "persona_leakage_values",
        "persona_style_mismatch",
    ),
    "Teacher-forced scoring of the reference": (
        "reference_nll",
        "personal_token_acc",
        "nonpersonal_token_acc",
        "personal_token_loss",
        "nonpersonal_token_loss",
    ),
    "Estimator": ("estimator_auroc", "estimator_f1"),
    "Training cost": ("train_tokens", "train_seconds"),
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
FIELD_ACCURACY = f"{SLOT_ACCURACY}_"  # + field: slot-conditional accuracy of one slot field
# Metric families named by a prefix, each its own table of the report: (prefix, title, legend line).
FAMILIES = (
    (FIELD_RECALL, "Persona recall by field", "persona recall of one field, over the targets that write it"),
    (
        SUBJECT_RECALL,
        "Persona slot recall by request subject",
        "slot-field recall over the targets whose request names this subject",
    ),
    (FIELD_ACCURACY, "Slot-conditional accuracy by field", "slot-conditional accuracy of one slot field"),
)


def family(name: str) -> str | None:
    """The prefix of the family `name` belongs to (None: a metric of its own, e.g. persona_recall_slot)."""
    if any(metric.name == name for metric in METRICS):
        return None
    return next((prefix for prefix, _, _ in FAMILIES if name.startswith(prefix)), None)


def metric_spec(name: str) -> Metric:
    for metric in METRICS:
        if metric.name == name:
            return metric
    prefix = family(name)
    if prefix == FIELD_RECALL:
        field = name.removeprefix(FIELD_RECALL)
        return Metric(name, "higher", f"persona recall of the field {field}", field_recall(field))
    if prefix == SUBJECT_RECALL:
        subject = name.removeprefix(SUBJECT_RECALL)
        return Metric(
            name, "higher", f"slot recall, requests about {subject}", breakdown(name, "persona_slot_written")
        )
    if prefix == FIELD_ACCURACY:
        field = name.removeprefix(FIELD_ACCURACY)
        return Metric(name, "higher", f"slot accuracy of {field}", breakdown(name, "persona_slot_written"))
    return Metric(name, "", name)


def arrow(metric: str) -> str:
    return {"higher": " ↑", "lower": " ↓"}.get(metric_spec(metric).better, "")
