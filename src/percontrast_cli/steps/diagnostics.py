"""Checks that stop, or warn loudly, when a run would be degenerate: the numbers would come out, exit 0, and
mean nothing. Each names what happened and the setting that fixes it.

- every prompt lost its whole profile to ``model.max_length`` (PerContrast then compares two identical
  prompts): an error; more than half of them: a warning;
- more than half the targets cut at ``model.max_length``: a warning (a few cut targets: a one-line note);
- every PerContrast score of an estimate exactly 0 (identical factual and counterfactual prompts): an error
  when the loss is weighted by the scores (PerCE would train on no signal), else a warning.
"""

from __future__ import annotations

import math

import numpy as np

from percontrast_cli.data.encode import CUT
from percontrast_cli.method.losses import weight_signal
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.runtime.progress import say, warn


def length_fix(items: list[dict], cfg) -> str:
    """``model.max_length=N``, N the longest whole prompt + target rounded up to a multiple of 64."""
    needed = max(item["needed"] for item in items)
    return (
        f"model.max_length={64 * math.ceil(needed / 64)} (the longest prompt with its whole profile, plus "
        f"its target, takes {needed} tokens; now {cfg.model.max_length})"
    )


def check_encoding(items: list[dict], cfg) -> None:
    """After encoding a split (steps.task_data.encode_items): profile items and targets that
    ``model.max_length`` cut."""
    if not items:
        return
    n, max_length = len(items), cfg.model.max_length
    with_profile = [item for item in items if item["profile_retrieved"]]
    emptied = sum(item["profile_items"] == 0 for item in with_profile)
    shortened = sum(item["profile_items"] < item["profile_retrieved"] for item in with_profile)
    cut = sum(bool(item[CUT]) for item in items)
    fewer = "or fewer profile items (retrieval.k, data.max_profile_items)"
    if with_profile and emptied == len(with_profile):
        raise PercontrastError(
            f"model.max_length={max_length} leaves no room for the profile: all {emptied} prompts lost every "
            "retrieved profile item, so PerContrast would compare two identical prompts (every score 0) and "
            f"nothing would be personalised; use {length_fix(items, cfg)}, {fewer}"
        )
    if emptied > len(with_profile) / 2:
        warn(
            f"{emptied} of {len(with_profile)} prompts lost their whole profile to model.max_length="
            f"{max_length}: their PerContrast scores are 0 and they are not personalised",
            fix=f"{length_fix(items, cfg)}, {fewer}",
        )
    elif shortened:
        say(
            f"[yellow]note[/yellow]: {shortened} of {len(with_profile)} prompts dropped their least relevant "
            f"profile items to fit model.max_length={max_length}"
        )
    if cut > n / 2:
        warn(
            f"{cut} of {n} targets are longer than model.max_length={max_length} allows and were cut at the "
            "end (without an end token): the model learns and is scored on truncated texts",
            fix=length_fix(items, cfg),
        )
    elif cut:
        say(
            f"[yellow]warning[/yellow]: {cut} of {n} targets are longer than model.max_length={max_length} "
            "allows and were cut at the end (without an end token)"
        )


def check_scores(rows: list[np.ndarray], cfg) -> None:
    """After an estimate: every PerContrast score exactly 0 means the factual and counterfactual prompts were
    the same for every example."""
    if any(np.any(values != 0) for values in rows):
        return
    if cfg.retrieval.k == 0:
        why = "retrieval.k=0 puts no profile in the prompt"
        fix = "retrieval.k=5 (or loss=ce for a no-profile baseline)"
    else:
        why = (
            "the factual and counterfactual prompts are the same for every example (examples without profile "
            f"items, or estimator.counterfactual={cfg.estimator.counterfactual} giving the same profile)"
        )
        fix = "check the data's profiles, or estimator.counterfactual=drop"
    message = f"every PerContrast score is 0: {why}"
    if weight_signal(cfg.loss) == "pir":
        raise PercontrastError(
            f"{message}; loss={cfg.loss.name} would weight every token the same and train on no signal; "
            f"use {fix}"
        )
    warn(f"{message}; the estimator metrics (AUROC 0.5) say nothing", fix=fix)
