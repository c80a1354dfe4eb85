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

from percontrast_cli.data.schema import Example

# Text that must directly follow a field's value for it to count (see the module docstring).
FOLLOWED_BY = {"signoff": ","}


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


def score_generation(example: Example, generation: str, pool: dict[str, dict[str, frozenset[str]]]) -> dict:
    """The persona fields this generation recalls, over-inserts and leaks (lists of field names; leaked:
    field -> the other users' values found). Empty dict for an example without persona ground truth."""
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
    return {
        "persona_present": present,
        "persona_recalled": [f for f in present if own_spans[f]],
        "persona_absent": absent,
        "persona_over_inserted": [f for f in absent if own_spans[f]],
        "persona_leaked": leaked,
        "persona_n_fields": len(own),
    }


def outside(found: Sequence[tuple[int, int]], own: Sequence[tuple[int, int]]) -> bool:
    """Whether any span in `found` is not contained in one of the `own` spans."""
    return any(not any(a <= start and end <= b for a, b in own) for start, end in found)


def persona_metrics(rows: Sequence[dict]) -> dict[str, float]:
    """Pooled over the test targets (each is a count over (target, field) pairs, as the report resamples):
    recall overall and per field, over-insertion and leakage rates. Empty without persona rows."""
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
    return metrics
