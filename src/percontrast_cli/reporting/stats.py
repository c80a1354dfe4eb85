"""The report's statistics: paired differences (method − CE) over seeds and test users, with a bootstrap
interval; the one bootstrap every report uses."""

from __future__ import annotations

import numpy as np

from percontrast_cli.reporting.metric_table import metric_spec

BOOTSTRAP_SAMPLES = 2000


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


def interval_level(summary: list[dict]) -> str:
    levels = {f["level"] for e in summary for f in e.get("paired", {}).values()}
    if not levels:
        return "none"
    return "seeds, then users" if levels == {"users"} else "seeds, then examples (no user ids in some evals)"


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
