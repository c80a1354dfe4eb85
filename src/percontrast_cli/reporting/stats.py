"""The report's statistics: the one bootstrap every report uses (`report`, ALOE, any metric), and the paired
differences (method − CE) over seeds and test users built on it.

The design is **crossed** when every seed is scored on the same test users (the usual case: one test split,
several training seeds): a bootstrap draw resamples the seeds with replacement and, once, the users, and
applies that same user multiset to every drawn seed. Drawing a separate user resample per seed (a
**nested** draw) would divide the user variance by the number of seeds and give intervals about √S too
narrow; it is right only when each seed really meets its own users, and it is chosen automatically then
(the user sets differ between seeds). The unit is the user with all of their targets (they share one
persona); evals whose rows carry no user ids fall back to the example. Differences are paired: the same
seed on both sides, and the same drawn users. The interval is the percentile interval of the draws.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from percontrast_cli.reporting.metric_table import metric_spec

BOOTSTRAP_SAMPLES = 2000
LEVEL = 0.95
CROSSED, NESTED = "crossed", "nested"


@dataclass(frozen=True)
class Units:
    """Per-unit sums for the bootstrap. ``sums``: one array per seed, (sides, numerator/denominator, units);
    ``units``: each seed's unit names (users, or examples without user ids)."""

    sums: list[np.ndarray]
    units: list[tuple]
    unit: str  # "user" | "example"

    @property
    def design(self) -> str:
        return CROSSED if all(u == self.units[0] for u in self.units) else NESTED


def ratios(totals: np.ndarray) -> np.ndarray:
    """numerator / denominator over the last axis (NaN where nothing was counted)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(totals[..., 1] > 0, totals[..., 0] / totals[..., 1], np.nan)


def crossed_bootstrap(sums: np.ndarray, draws: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> np.ndarray:
    """Draws of each side's mean over seeds of its ratio. ``sums``: (seeds, sides, numerator/denominator,
    units). Each draw resamples the seeds with replacement and, once, the units (a multinomial count per
    unit), the same units for every drawn seed and both sides. Returns (draws, sides)."""
    n_seeds, n_units = sums.shape[0], sums.shape[-1]
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=draws).astype(float)
    unit_counts = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=draws).astype(float)
    per_seed = ratios(np.einsum("bu,sjku->bsjk", unit_counts, sums))  # (draws, seeds, sides)
    weights = np.where(np.isnan(per_seed), 0.0, seed_counts[..., None])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nansum(per_seed * weights, axis=1) / weights.sum(axis=1)


def nested_bootstrap(sums: list[np.ndarray], draws: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> np.ndarray:
    """The same for seeds that each meet their own units (``sums``: per seed (sides, 2, units)): each draw
    resamples the seeds, then, for each drawn seed, that seed's units. Returns (draws, sides)."""
    n_seeds = len(sums)
    rng = np.random.default_rng(seed)
    seed_draw = rng.integers(0, n_seeds, size=(draws, n_seeds))
    drawn = np.empty((draws, n_seeds, sums[0].shape[0]))
    for s, per_unit in enumerate(sums):  # each drawn seed slot with its own unit resample
        n_units = per_unit.shape[-1]
        counts = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=(draws, n_seeds))
        totals = ratios(np.einsum("bju,sku->bjsk", counts.astype(float), per_unit))
        chosen = seed_draw == s
        drawn[chosen] = totals[chosen]
    return np.nanmean(drawn, axis=1)


def bootstrap(units: Units, draws: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> np.ndarray:
    """The report's bootstrap, crossed or nested as the data are (see the module docstring)."""
    if units.design == CROSSED:
        return crossed_bootstrap(np.stack(units.sums), draws, seed)
    return nested_bootstrap(units.sums, draws, seed)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def point_estimate(units: Units) -> np.ndarray:
    """Each side's mean over seeds of its ratio over all units: (sides,)."""
    return np.nanmean([ratios(s.sum(-1)) for s in units.sums], axis=0)


def interval_of(units: Units, seed: int = 0) -> dict:
    """The point estimate of side 0 − side 1 (or of the one side), its percentile interval and what the
    bootstrap resampled."""
    point = point_estimate(units)
    drawn = bootstrap(units, seed=seed)
    if drawn.shape[1] == 2:
        point, drawn = point[:1] - point[1:], drawn[:, :1] - drawn[:, 1:]
    low, high = percentile_interval(drawn[:, 0])
    return {
        "diff": float(point[0]),
        "low": low,
        "high": high,
        "pairs": len(units.sums),
        "units": max(s.shape[-1] for s in units.sums),
        "design": units.design,
        "unit": units.unit,
        "draws": BOOTSTRAP_SAMPLES,
    }


def example_sums(example: dict, sums) -> tuple[float, float] | None:
    """One test target's (numerator, denominator): with several generations per target (eval.samples), the
    mean over its samples, so the bootstrap resamples targets' means and never samples."""
    samples = example.get("samples") or [example]
    found = [sums(s) for s in samples]
    if any(f is None for f in found):
        return None
    return tuple(float(v) for v in np.mean(found, axis=0))


def seed_pairs(rows: list[dict], baseline_rows: list[dict]) -> list[tuple[dict, dict]]:
    """(method, CE) evals of the same seed, both with per-example rows."""
    by_seed = {r["options"]["seed"]: r for r in baseline_rows}
    pairs = [(r, by_seed[r["options"]["seed"]]) for r in rows if r["options"]["seed"] in by_seed]
    return [(a, b) for a, b in pairs if a["examples"] and b["examples"]]


def unit_sums(seeds: list[list[dict]], metric: str) -> Units | None:
    """Per seed, its evals' (one per side) per-unit sums of `metric` over the test targets every side of that
    seed has. Crossed when every seed has the same users: then only the targets all seeds share count. None
    without per-example rows of the metric."""
    sums = metric_spec(metric).sums
    if sums is None or not seeds:
        return None
    ids = [sorted(set.intersection(*(set(r["examples"]) for r in sides))) for sides in seeds]
    users = [
        {r["examples"][i].get("user_id") for r in sides for i in ids_}
        for sides, ids_ in zip(seeds, ids, strict=True)
    ]
    if all(u == users[0] for u in users):  # crossed: the targets common to every seed
        common = sorted(set.intersection(*map(set, ids)))
        ids = [common] * len(seeds)
    if not all(ids):
        return None
    unit = "user" if None not in set().union(*users) else "example"
    arrays, names = [], []
    for sides, ids_ in zip(seeds, ids, strict=True):
        clusters = [sides[0]["examples"][i].get("user_id") if unit == "user" else i for i in ids_]
        order = sorted(set(clusters), key=str)
        member = np.zeros((len(ids_), len(order)))
        member[np.arange(len(ids_)), [order.index(c) for c in clusters]] = 1.0
        values = [[example_sums(r["examples"][i], sums) for i in ids_] for r in sides]
        if any(v is None for side in values for v in side):
            return None  # evals from before this metric's per-example rows
        arrays.append(np.einsum("sek,eu->sku", np.array(values, dtype=float), member))
        names.append(tuple(order))
    return Units(arrays, names, unit)


def paired_difference(rows: list[dict], baseline_rows: list[dict], metric: str, seed: int = 0):
    """Mean over seeds of (method − CE) on `metric`, with a 95% percentile interval from the report's
    bootstrap (crossed user × seed unless the seeds meet different users), the same draw on both sides.
    Ratio metrics (token accuracies, NLL, persona rates) are pooled over the drawn users' counts, as the
    metric itself is. None without seed pairs or per-example data."""
    pairs = seed_pairs(rows, baseline_rows)
    units = unit_sums([list(pair) for pair in pairs], metric)
    if units is None:
        return None
    with warnings.catch_warnings():  # a ratio with no denominator on one side (0/0 in every seed): below
        warnings.simplefilter("ignore", RuntimeWarning)
        found = interval_of(units, seed)
    if not all(np.isfinite(found[k]) for k in ("diff", "low", "high")):
        return None  # undefined (slot-conditional accuracy where no generation wrote the slot), not "nan"
    found["users"] = found["units"] if units.unit == "user" else None
    found["n"] = len(set().union(*(set(a["examples"]) & set(b["examples"]) for a, b in pairs)))
    return found


def excludes_zero(found: dict) -> bool:
    return found["low"] > 0 or found["high"] < 0


def identical(found: dict) -> bool:
    """No draw found any difference: both sides equal on every example (a teacher-forced metric of context-
    aware decoding, which uses the same checkpoint; a metric that is 0 on both sides). Not an interval that
    could exclude 0, so the chance line does not count it and the tables say `identical`."""
    return found["diff"] == found["low"] == found["high"] == 0.0


def format_difference(found: dict, digits: int = 4) -> str:
    """`+0.0123 [-0.0040, +0.0290]`, starred when the interval excludes zero; `identical` when both sides
    are equal on every example."""
    if identical(found):
        return "identical"
    star = "*" if excludes_zero(found) else ""
    return f"{found['diff']:+.{digits}f} [{found['low']:+.{digits}f}, {found['high']:+.{digits}f}]{star}"


def resampled(found: dict) -> str:
    """What one interval resampled, for report.csv's `ci_resampled`: `crossed: seeds x users`."""
    if found["design"] == CROSSED:
        return f"crossed: seeds x {found['unit']}s"
    return f"nested: seeds, then {found['unit']}s per seed"


def interval_description(summary: list[dict]) -> str:
    """The bootstrap behind a report's Δ intervals in one short phrase: level, draws, design and unit, e.g.
    `95% percentile, 2000 draws, crossed bootstrap: seeds x users`."""
    found = [f for e in summary for f in e.get("paired", {}).values()]
    if not found:
        return "none"
    kinds = " / ".join(sorted({resampled(f) for f in found}))
    return f"{LEVEL:.0%} percentile, {BOOTSTRAP_SAMPLES} draws, {kinds.replace(':', ' bootstrap:')}"


def non_loss_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if k != "loss" and not k.startswith("loss.")}


def plain_decoding(options: dict) -> dict:
    """The options with context-aware decoding taken away (the same checkpoint, decoded plainly)."""
    plain = {k: v for k, v in options.items() if k != "eval.cad_alpha"}
    if "eval.decoding" in plain:
        plain["eval.decoding"] = "plain"
    return plain


def baseline_of(entry: dict, summary: list[dict]) -> dict | None:
    """The CE group equal to `entry` in every non-loss setting; for CE decoded with context-aware decoding
    (eval.decoding=cad, the training-free contrast), the same CE models decoded plainly."""
    options = entry["options"]
    if options.get("loss") == "ce":
        if options.get("eval.decoding") != "cad":
            return None
        wanted = plain_decoding(non_loss_options(options))
        matches = (
            b
            for b in summary
            if b["options"].get("loss") == "ce" and b["options"].get("eval.decoding") != "cad"
        )
        return next((b for b in matches if plain_decoding(non_loss_options(b["options"])) == wanted), None)
    return next(
        (
            b
            for b in summary
            if b["options"].get("loss") == "ce"
            and non_loss_options(b["options"]) == non_loss_options(options)
        ),
        None,
    )


def same_evals(entry: dict, baseline: dict) -> bool:
    """Whether a group's evals are its CE group's own (a learning curve's step 0: the shared starting model
    under every loss's label): nothing to compare, no Δ."""
    return {r.get("id") for r in entry["rows"]} == {r.get("id") for r in baseline["rows"]} != {None}
