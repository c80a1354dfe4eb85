"""How far a judge can be trusted, measured without trusting it.

- **Score-token mass**: the probability the judge puts on the score tokens "1".."5" at all, before the
  expected score renormalises over them. A judge that mostly wants to write something else (a preamble, a
  refusal, another format) gives a mass near 0, and its renormalised score is noise.
- **Swap accuracy**: a validation that needs no generator. For every persona test target the judge scores
  the reference, and the same reference with another user's values swapped in (every persona value the
  reference writes replaced by that user's value of the field); `judge_swap_accuracy` is the share of
  targets whose true reference scores higher (a tie counts one half, so 0.5 is chance).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from percontrast_cli.data.schema import Example
from percontrast_cli.evaluation.persona_metrics import find
from percontrast_cli.runtime.progress import say

LOW_MASS = 0.5  # a verdict with less probability than this on the score tokens is mostly not an answer


def mass_metrics(masses: list[float | None]) -> dict[str, float]:
    """The mean score-token mass and the share of verdicts under LOW_MASS, with a loud warning when most are
    (mode=parsed verdicts have no mass: nothing)."""
    found = [m for m in masses if m is not None]
    if not found:
        return {}
    low = float(np.mean([m < LOW_MASS for m in found]))
    if low > 0.5:
        say(
            f"[yellow]warning[/yellow]: the judge put less than {LOW_MASS} of its probability on the score "
            f"tokens 1-5 for {low:.0%} of the examples (mean {np.mean(found):.3f}): its expected scores are "
            "mostly renormalised noise; use a capable judge (eval.judge=<7B+ instruct model>)"
        )
    return {"judge_score_mass_mean": float(np.mean(found)), "judge_score_mass_low_share": low}


def swapped_reference(example: Example, other: Example) -> str | None:
    """`example`'s reference with each persona value it writes replaced by `other`'s value of the field (None:
    nothing to swap)."""
    own, theirs = example.persona_values, other.persona_values
    spans = []
    for field in example.persona_fields or ():
        if own.get(field, "").strip() and own[field] != theirs.get(field):
            spans += [(a, b, theirs.get(field, "")) for a, b in find(field, own[field], example.output)]
    kept, end = [], -1
    for start, stop, value in sorted(spans):  # overlapping spans: the first one wins
        if start >= end:
            kept.append((start, stop, value))
            end = stop
    if not kept:
        return None
    text = example.output
    for start, stop, value in reversed(kept):
        text = text[:start] + value + text[stop:]
    return text


def swap_pairs(examples: list[Example]) -> list[tuple[Example, str]]:
    """Each persona test target (once, whatever eval.samples) with its reference swapped to the next test
    user's values (users in id order, the last swapped with the first)."""
    targets = list({e.id: e for e in examples if e.persona is not None and e.persona_fields}.values())
    first_of = {}
    for example in targets:
        first_of.setdefault(example.user_id, example)
    users = sorted(first_of)
    if len(users) < 2:
        return []
    partner = {u: first_of[users[(i + 1) % len(users)]] for i, u in enumerate(users)}
    pairs = [(e, swapped_reference(e, partner[e.user_id])) for e in targets]
    return [(e, text) for e, text in pairs if text is not None]


def swap_accuracy(
    examples: list[Example], prompt: Callable[[Example, str], str], score: Callable[[list[str]], list]
) -> dict[str, float]:
    """judge_swap_accuracy over the persona test targets (empty without persona ground truth): ``prompt``
    builds a judge prompt for (example, response), ``score`` scores prompts (None: no score)."""
    pairs = swap_pairs(examples)
    if not pairs:
        return {}
    prompts = [prompt(e, e.output) for e, _ in pairs] + [prompt(e, text) for e, text in pairs]
    scores = score(prompts)
    true, swapped = scores[: len(pairs)], scores[len(pairs) :]
    outcomes = [
        1.0 if t > s else 0.5 if t == s else 0.0
        for t, s in zip(true, swapped, strict=True)
        if t is not None and s is not None
    ]
    if not outcomes:
        return {}
    return {"judge_swap_accuracy": float(np.mean(outcomes)), "judge_swap_pairs": float(len(outcomes))}
