"""Personalisation measured in what the model writes, where the ground truth is known exactly (the persona
tasks, or data files that give each example's `persona` and `persona_fields`).

Per generation, for each persona field (name, town, brand, hobby, catchphrase, greeting, sign-off, emoji):

- **recall**: the reference writes the field and the generation contains the user's value;
- **over-insertion**: the reference does not write the field (e.g. a target without the catchphrase, a
  review without a greeting) but the generation contains the user's value anyway;
- **leakage**: the generation contains a value of that field that belongs to another user of the data (a
  training user's brand, another user's sign-off) and is not this user's.

A value "is contained" when it occurs as written (case kept) with no word character glued to either end, so
"Ashford" is not found in "Ashfordham" and the sign-off "Best" not in "All the best". A sign-off must be
followed by a comma, as every persona target writes it ("Thanks," and not "Thanks again,"). For leakage,
another user's value is not counted where it lies inside one of this user's own values found in the text
(the hobby "running" inside this user's "trail running"), nor when the reference itself contains it outside
this user's values (then it is generic text there, not another user's trait).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from percontrast_cli.data.personas import OPEN_ATTRIBUTES, TASKS
from percontrast_cli.data.schema import Example

# Text that must directly follow a field's value for it to count (see the module docstring).
FOLLOWED_BY = {"signoff": ","}
# How a target carries each field. Copy fields: the frame of every target (greeting, name, sign-off, emoji),
# written verbatim from the profile wherever the reference has them. The catchphrase: a whole sentence in a
# random 30% of the references, so its recall and its over-insertion are one quantity, its rate. Every other
# field is a slot field: a value that needs a body sentence to carry it (town, brand, hobby), and that
# sentence comes with the request's subject.
COPY_FIELDS = ("name", "greeting", "signoff", "emoji")
CATCHPHRASE = "catchphrase"
# Leakage: another user's value of an open-vocabulary field (name, town, brand, catchphrase) is a value that
# crossed users; another user's choice of a closed-set field (greeting, sign-off, emoji, hobby) is a style
# mismatch, not a leak: the same few options are every user's.
CROSS_USER_FIELDS = OPEN_ATTRIBUTES
VALUE = r"[^.!?\n]+?"  # a slot's value inside one sentence


def is_slot(field: str) -> bool:
    return field not in COPY_FIELDS and field != CATCHPHRASE


@lru_cache(maxsize=16)
def slot_sentences(task: str) -> dict[str, tuple[re.Pattern, ...]]:
    """Per slot field, one pattern per known paraphrase of every body sentence that carries it (the task's
    pool file lists them), the value as the group `value`. Empty for a task without templates."""
    spec = TASKS.get(task)
    if spec is None:
        return {}
    found: dict[str, list[re.Pattern]] = {}
    for sentences in spec["subjects"].values():
        for paraphrase in (p for variants in sentences for p in variants):
            for field in re.findall(r"\{(\w+)\}", paraphrase):
                parts = re.split(r"(\{\w+\})", paraphrase)
                pattern = "".join(
                    (f"(?P<value>{VALUE})" if part == f"{{{field}}}" else VALUE)
                    if re.fullmatch(r"\{\w+\}", part)
                    else re.escape(part)
                    for part in parts
                )
                found.setdefault(field, []).append(re.compile(pattern))
    return {field: tuple(patterns) for field, patterns in found.items()}


@lru_cache(maxsize=16)
def request_pattern(task: str) -> re.Pattern | None:
    spec = TASKS.get(task)
    if spec is None:
        return None
    parts = re.split(r"(\{\w+\})", spec["request"])
    return re.compile(
        "".join(
            f"(?P<{part[1:-1]}>.+?)" if re.fullmatch(r"\{\w+\}", part) else re.escape(part) for part in parts
        )
    )


def request_subject(task: str, request: str) -> str | None:
    """The subject a persona task's request names (`Write an email to team about a rent question.`)."""
    pattern = request_pattern(task)
    found = pattern.fullmatch(request.strip()) if pattern is not None else None
    return found.group("subject") if found is not None else None


def slot_sentence_counts(task: str, own: dict[str, str], generation: str) -> tuple[dict, dict]:
    """Per slot field: how many of the generation's sentences are a known paraphrase of a sentence that
    carries it, and how many of those carry this user's value."""
    written, correct = {}, {}
    for field, patterns in slot_sentences(task).items():
        if field not in own:
            continue
        values = [m.group("value").strip() for p in patterns for m in p.finditer(generation)]
        if values:
            written[field] = len(values)
            correct[field] = sum(value == own[field].strip() for value in values)
    return written, correct


@lru_cache(maxsize=65536)
def value_pattern(field: str, value: str) -> re.Pattern | None:
    """The value as written, not glued to word characters (None for an empty value: nothing to find)."""
    text = value.strip()
    if not text:
        return None
    left = r"(?<!\w)" if re.match(r"\w", text[0]) else ""
    right = r"(?!\w)" if re.match(r"\w", text[-1]) else ""
    follow = f"(?={re.escape(FOLLOWED_BY[field])})" if field in FOLLOWED_BY else ""
    return re.compile(left + re.escape(text) + right + follow)


def find(field: str, value: str, text: str) -> list[tuple[int, int]]:
    """Character spans where `value` (of persona field `field`) occurs in `text`."""
    pattern = value_pattern(field, value)
    if pattern is None or value.strip() not in text:  # the substring test: most values are not there
        return []
    return [match.span() for match in pattern.finditer(text)]


def value_pool(examples: Iterable[Example]) -> dict[str, dict[str, frozenset[str]]]:
    """Every persona value in the data: field -> value -> the users who have it (for leakage)."""
    users: dict[str, dict[str, set[str]]] = {}
    for example in examples:
        for field, value in example.persona or ():
            if value.strip():
                users.setdefault(field, {}).setdefault(value, set()).add(example.user_id)
    return {f: {v: frozenset(u) for v, u in values.items()} for f, values in users.items()}


def score_generation(
    example: Example, generation: str, pool: dict[str, dict[str, frozenset[str]]], task: str | None = None
) -> dict:
    """The persona fields this generation recalls, over-inserts and leaks (lists of field names; leaked:
    field -> the other users' values found); on a persona task (`task`), also the request's subject and the
    slot sentences written and written with the user's value (field -> count). Empty dict for an example
    without persona ground truth."""
    if example.persona is None:
        return {}
    own = example.persona_values
    present = [f for f in own if f in (example.persona_fields or ())]
    absent = [f for f, v in own.items() if f not in present and v.strip()]  # an empty value: nothing to add
    own_spans = {f: find(f, v, generation) for f, v in own.items()}
    covered = [span for spans in own_spans.values() for span in spans]
    reference_covered = [span for f, v in own.items() for span in find(f, v, example.output)]
    leaked: dict[str, list[str]] = {}
    for field in own:
        for value, holders in sorted(pool.get(field, {}).items()):
            if value == own[field] or holders <= {example.user_id}:
                continue
            if outside(find(field, value, example.output), reference_covered):
                continue  # generic text of this reference, not another user's trait
            if outside(find(field, value, generation), covered):
                leaked.setdefault(field, []).append(value)
    row = {
        "persona_present": present,
        "persona_recalled": [f for f in present if own_spans[f]],
        "persona_absent": absent,
        "persona_over_inserted": [f for f in absent if own_spans[f]],
        "persona_leaked": leaked,
        "persona_n_fields": len(own),
        "persona_fields": list(own),
    }
    if task is not None and task in TASKS:
        row["request_subject"] = request_subject(task, example.input)
        row["persona_slot_written"], row["persona_slot_correct"] = slot_sentence_counts(task, own, generation)
    return row


def outside(found: Sequence[tuple[int, int]], own: Sequence[tuple[int, int]]) -> bool:
    """Whether any span in `found` is not contained in one of the `own` spans."""
    return any(not any(a <= start and end <= b for a, b in own) for start, end in found)


SUBJECT_RECALL = "persona_slot_recall_"  # + a request subject's slug: slot recall over its targets
SLOT_ACCURACY = "persona_slot_accuracy"  # (+ "_" + a field: that field's)


def subject_slug(subject: str) -> str:
    return re.sub(r"\W+", "_", subject.strip().lower()).strip("_")


def breakdown_counts(row: dict) -> dict[str, tuple[float, float]]:
    """One target's (numerator, denominator) of each metric that says what moved: recall of copy and of slot
    fields, how often a slot's sentence is written at all and with which value (slot-conditional accuracy),
    slot recall under the request's subject, the catchphrase's rate in the
    generation and in the reference, and leakage split into cross-user values and style mismatch. Pooled over
    targets (sum of numerators / sum of denominators) by the eval and by the report's bootstrap alike."""
    if "persona_present" not in row:
        return {}
    present, recalled = row["persona_present"], set(row["persona_recalled"])
    written = recalled | set(row["persona_over_inserted"])
    fields = row.get("persona_fields") or [*present, *row["persona_absent"]]
    leaked = set(row["persona_leaked"])
    slot_present = [f for f in present if is_slot(f)]
    slot_recall = (float(len(recalled.intersection(slot_present))), float(len(slot_present)))
    counts = {
        "persona_recall_copy": (
            float(sum(f in recalled for f in present if f in COPY_FIELDS)),
            float(sum(f in COPY_FIELDS for f in present)),
        ),
        "persona_recall_slot": slot_recall,
        "persona_leakage_values": (
            float(len(leaked.intersection(CROSS_USER_FIELDS))),
            float(sum(f in CROSS_USER_FIELDS for f in fields)),
        ),
        "persona_style_mismatch": (
            float(len(leaked.difference(CROSS_USER_FIELDS))),
            float(sum(f not in CROSS_USER_FIELDS for f in fields)),
        ),
    }
    if CATCHPHRASE in fields:
        counts["persona_catchphrase_rate"] = (float(CATCHPHRASE in written), 1.0)
        counts["persona_catchphrase_reference_rate"] = (float(CATCHPHRASE in present), 1.0)
    if "persona_slot_written" in row:
        counts["persona_slot_sentence_rate"] = (
            float(sum(row["persona_slot_written"].get(f, 0) > 0 for f in slot_present)),
            float(len(slot_present)),
        )
        counts[SLOT_ACCURACY] = (
            float(sum(row["persona_slot_correct"].values())),
            float(sum(row["persona_slot_written"].values())),
        )
        for field, count in row["persona_slot_written"].items():
            counts[f"{SLOT_ACCURACY}_{field}"] = (float(row["persona_slot_correct"][field]), float(count))
    if row.get("request_subject"):
        counts[SUBJECT_RECALL + subject_slug(row["request_subject"])] = slot_recall
    return counts


def pooled(rows: Sequence[dict], counts) -> dict[str, float]:
    """Per name, the sum of numerators / the sum of denominators over the rows (none counted: left out)."""
    totals: dict[str, list[float]] = {}
    for row in rows:
        for name, (numerator, denominator) in counts(row).items():
            total = totals.setdefault(name, [0.0, 0.0])
            total[0] += numerator
            total[1] += denominator
    return {name: numerator / denominator for name, (numerator, denominator) in totals.items() if denominator}


def persona_metrics(rows: Sequence[dict]) -> dict[str, float]:
    """Pooled over the test targets (each is a count over (target, field) pairs, as the report resamples):
    recall overall and per field, over-insertion and leakage rates, and the breakdown of breakdown_counts.
    Empty without persona rows."""
    rows = [r for r in rows if "persona_present" in r]
    if not rows:
        return {}
    present = sum(len(r["persona_present"]) for r in rows)
    metrics: dict[str, float] = {}
    if present:
        metrics["persona_recall"] = sum(len(r["persona_recalled"]) for r in rows) / present
    fields = dict.fromkeys(f for r in rows for f in r["persona_present"])
    for field in fields:
        with_field = [r for r in rows if field in r["persona_present"]]
        hits = sum(field in r["persona_recalled"] for r in with_field)
        metrics[f"persona_recall_{field}"] = hits / len(with_field)
    absent = sum(len(r["persona_absent"]) for r in rows)
    if absent:
        metrics["persona_over_insertion"] = sum(len(r["persona_over_inserted"]) for r in rows) / absent
    checked = sum(r["persona_n_fields"] for r in rows)
    if checked:
        metrics["persona_leakage"] = sum(len(r["persona_leaked"]) for r in rows) / checked
    metrics.update(pooled(rows, breakdown_counts))
    return metrics
