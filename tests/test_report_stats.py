"""The report's statistics (issues 19, 29): the paired difference's interval comes from a crossed user x seed
bootstrap (users with all of their targets, the same users for every seed; nested only when the seeds met
different users); report.csv holds numbers in separate columns; report.md says what it shows."""

import csv

import numpy as np
import pytest

from percontrast_cli.reporting import plots, report, stats, tables
from percontrast_cli.runtime.errors import PercontrastError


def eval_row(seed, loss, scores, users=None):
    """An eval as the report sees it: per-example ROUGE-L and persona counts (recalled of 2 fields)."""
    examples = {}
    for i, score in enumerate(scores):
        row = {"id": f"x{i}", "rougeL": float(score)}
        row.update(
            persona_present=["name", "town"], persona_recalled=["name", "town"][: int(score > 0.5) + 1]
        )
        if users is not None:
            row["user_id"] = users[i]
        examples[f"x{i}"] = row
    metrics = {"rougeL": float(np.mean(scores))}
    return {"options": {"seed": seed, "loss": loss}, "examples": examples, "metrics": metrics, "history": []}


def test_the_interval_resamples_users_with_all_of_their_targets():
    rng = np.random.default_rng(0)
    n_users = 40
    effect = np.repeat(rng.choice([-0.2, 0.2], n_users), 2)  # two targets per user, the same gap on both
    base = rng.uniform(0.3, 0.5, n_users * 2)
    users = [f"u{i // 2}" for i in range(n_users * 2)]
    by_user = stats.paired_difference(
        [eval_row(0, "perce", base + effect, users)], [eval_row(0, "ce", base, users)], "rougeL"
    )
    by_example = stats.paired_difference(
        [eval_row(0, "perce", base + effect)], [eval_row(0, "ce", base)], "rougeL"
    )
    assert by_user["unit"] == "user" and by_user["users"] == n_users and by_user["n"] == 2 * n_users
    assert by_example["unit"] == "example" and by_example["users"] is None
    assert by_user["diff"] == pytest.approx(by_example["diff"]) == pytest.approx(effect.mean())
    # 40 independent users, not 80 independent targets: the interval is about sqrt(2) wider
    width = (by_user["high"] - by_user["low"]) / (by_example["high"] - by_example["low"])
    assert 1.25 < width < 1.6, width


def crossed_study(rng, n_seeds=3, n_users=30, per_user=2, user_sd=0.08, seed_sd=0.005, noise=0.05):
    """Per-example ROUGE-L of CE and PerCE for seeds x users x targets, every seed scored on the same users:
    PerCE − CE = a user effect (strong) + a seed effect + noise; the true mean difference is 0."""
    users = [f"u{u}" for u in range(n_users) for _ in range(per_user)]
    user_effect = np.repeat(rng.normal(0, user_sd, n_users), per_user)
    base = rng.uniform(0.3, 0.5, n_users * per_user)
    rows = []
    for seed in range(n_seeds):
        shift = rng.normal(0, seed_sd)
        ce = base + rng.normal(0, noise, base.size)
        rows.append(eval_row(seed, "ce", ce, users))
        perce = base + user_effect + shift + rng.normal(0, noise, base.size)
        rows.append(eval_row(seed, "perce", perce, users))
    return rows


def independent_crossed_interval(rows, draws=2000, seed=1):
    """A two-way (crossed) bootstrap written out plainly: draw the seeds, draw the users once, score every
    drawn seed on those users; the difference of ROUGE-L means (method − CE), averaged over drawn seeds."""
    rng = np.random.default_rng(seed)
    by = {(r["options"]["loss"], r["options"]["seed"]): r for r in rows}
    seeds = sorted({r["options"]["seed"] for r in rows})
    targets = {}
    for i, example in by[("ce", seeds[0])]["examples"].items():
        targets.setdefault(example["user_id"], []).append(i)
    users = sorted(targets)
    values = []
    for _ in range(draws):
        drawn_seeds = rng.choice(seeds, len(seeds))
        drawn_ids = [i for u in rng.choice(users, len(users)) for i in targets[u]]
        per_seed = []
        for s in drawn_seeds:
            method = np.mean([by[("perce", s)]["examples"][i]["rougeL"] for i in drawn_ids])
            baseline = np.mean([by[("ce", s)]["examples"][i]["rougeL"] for i in drawn_ids])
            per_seed.append(method - baseline)
        values.append(np.mean(per_seed))
    return np.percentile(values, [2.5, 97.5])


def test_the_report_interval_is_the_crossed_user_by_seed_bootstrap():
    """Acceptance (issue 29): 2 losses x 3 seeds x 30 users with a strong user effect. The report's interval
    is within 15% of a crossed bootstrap computed here independently, and about sqrt(3) wider than a nested
    draw (a user resample per seed), which divides the user variance by the number of seeds."""
    rows = crossed_study(np.random.default_rng(3))
    keys = report.group_keys(rows)
    (perce,) = [e for e in report.summarize(rows, keys) if e["options"]["loss"] == "perce"]
    found = perce["paired"]["rougeL"]
    assert found["design"] == "crossed" and found["unit"] == "user" and found["users"] == 30
    low, high = independent_crossed_interval(rows)
    width = found["high"] - found["low"]
    assert abs(width / (high - low) - 1) < 0.15, (width, high - low)
    assert abs((found["low"] + found["high"]) / 2 - (low + high) / 2) < 0.15 * width
    units = stats.unit_sums([[perce["rows"][s], ce] for s, ce in enumerate(rows[::2])], "rougeL")
    nested = stats.nested_bootstrap(units.sums)
    nested_low, nested_high = stats.percentile_interval(nested[:, 0] - nested[:, 1])
    assert width / (nested_high - nested_low) > 1.4


def test_crossed_intervals_cover_the_true_difference():
    """Coverage of the nominal 95% interval on simulated crossed data (true difference 0; the user effect
    dominates), a few hundred replications: at least 0.93 crossed. The nested draw on the same data falls
    short (about 0.87), so this check can fail."""
    rng = np.random.default_rng(11)

    def covers(drawn):
        low, high = stats.percentile_interval(drawn[:, 0] - drawn[:, 1])
        return low <= 0 <= high

    replications, crossed, nested = 300, 0, 0
    for replication in range(replications):
        rows = crossed_study(rng, noise=0.08)
        units = stats.unit_sums([[rows[2 * s + 1], rows[2 * s]] for s in range(3)], "rougeL")
        crossed += covers(stats.bootstrap(units, 1000, replication))
        nested += covers(stats.nested_bootstrap(units.sums, 1000, replication))
    assert crossed / replications >= 0.93, crossed / replications
    assert nested / replications < 0.93, nested / replications


def test_nested_is_chosen_only_when_the_seeds_meet_different_users():
    scores = [0.2, 0.4, 0.3, 0.5]
    same = [eval_row(s, loss, scores, ["a", "a", "b", "b"]) for s in (0, 1) for loss in ("perce", "ce")]
    assert stats.paired_difference(same[0::2], same[1::2], "rougeL")["design"] == "crossed"
    users = {0: ["a", "a", "b", "b"], 1: ["c", "c", "d", "d"]}  # each seed its own test users
    rows = [eval_row(s, loss, scores, users[s]) for s in (0, 1) for loss in ("perce", "ce")]
    for row in rows:  # other users: other targets
        row["examples"] = {f"{k}-s{row['options']['seed']}": v for k, v in row["examples"].items()}
    found = stats.paired_difference(rows[0::2], rows[1::2], "rougeL")
    assert found["design"] == "nested" and found["pairs"] == 2 and found["n"] == 8
    assert stats.resampled(found) == "nested: seeds, then users per seed"


def test_a_target_s_samples_are_averaged_before_the_bootstrap():
    """eval.samples=2: a target's two generations count as their mean, and the units stay the users."""
    method = eval_row(0, "perce", [0.5, 0.5], ["a", "b"])
    method["examples"]["x0"]["samples"] = [{"rougeL": 0.2}, {"rougeL": 0.6}]  # mean 0.4
    method["examples"]["x1"]["samples"] = [{"rougeL": 1.0}, {"rougeL": 0.8}]  # mean 0.9
    found = stats.paired_difference([method], [eval_row(0, "ce", [0.5, 0.5], ["a", "b"])], "rougeL")
    assert found["diff"] == pytest.approx((0.4 + 0.9) / 2 - 0.5) and found["units"] == 2
    assert report.by_target([{"id": "x", "sample": 0, "v": 1}, {"id": "x", "sample": 1, "v": 2}])["x"][
        "samples"
    ] == [{"id": "x", "sample": 0, "v": 1}, {"id": "x", "sample": 1, "v": 2}]


def test_a_bootstrap_draw_takes_whole_users_and_whole_seeds():
    # 2 users x 2 targets; the method gains 1 on both of user a's targets, 0 on user b's: a draw of whole
    # users can only give a mean gain of 0, 1/2 or 1 (resampled targets would also give 1/4 and 3/4)
    per_user = np.zeros((1, 2, 2, 2))
    per_user[0, 0, 0] = [2.0, 0.0]  # method: numerator sums of users a, b
    per_user[:, :, 1] = 2.0  # two targets each
    drawn = stats.crossed_bootstrap(per_user)
    assert set(np.round(drawn[:, 0] - drawn[:, 1], 6)) == {0.0, 0.5, 1.0}
    # two seeds, gain 1 in one and 0 in the other, no spread between users: resampling the seeds spans both
    per_seed = np.zeros((2, 2, 2, 3))
    per_seed[0, 0, 0] = 1.0
    per_seed[:, :, 1] = 1.0
    drawn = stats.crossed_bootstrap(per_seed)
    assert set(np.round(drawn[:, 0] - drawn[:, 1], 6)) == {0.0, 0.5, 1.0}
    # crossed: one user multiset for both seeds. Seed 0 gains 1 on user a only, seed 1 on user b only; with
    # both seeds drawn, a draw of users {a, a} gives 1/2 exactly as {b, b} does and {a, b} does
    per_user = np.zeros((2, 2, 2, 2))
    per_user[0, 0, 0] = [1.0, 0.0]
    per_user[1, 0, 0] = [0.0, 1.0]
    per_user[:, :, 1] = 1.0
    drawn = stats.crossed_bootstrap(per_user, draws=4000)
    both = drawn[:, 0] - drawn[:, 1]
    assert set(np.round(both, 6)) == {0.0, 0.5, 1.0}  # nested would add 1/4 and 3/4 (own users per seed)
    rows = [eval_row(s, "perce", [0.9] * 3 if s == 0 else [0.4] * 3, ["a", "b", "c"]) for s in (0, 1)]
    found = stats.paired_difference(
        rows, [eval_row(s, "ce", [0.4] * 3, ["a", "b", "c"]) for s in (0, 1)], "rougeL"
    )
    assert found["diff"] == pytest.approx(0.25)
    assert found["low"] == pytest.approx(0, abs=1e-9) and found["high"] == pytest.approx(0.5)


def test_persona_rates_are_pooled_over_the_drawn_users_fields():
    rows = [eval_row(0, "perce", [0.9, 0.1, 0.9], ["a", "a", "b"])]  # recalled 2, 1, 2 of 2 fields
    base = [eval_row(0, "ce", [0.1, 0.1, 0.1], ["a", "a", "b"])]  # 1 of 2 each
    found = stats.paired_difference(rows, base, "persona_recall")
    assert found["diff"] == pytest.approx(5 / 6 - 1 / 2)
    assert stats.paired_difference(rows, base, "persona_recall_town")["diff"] == pytest.approx(2 / 3)
    assert stats.paired_difference(rows, base, "estimator_auroc") is None  # no per-example rows


def test_report_csv_is_numeric_and_markdown_has_title_source_sizes_and_legend(tmp_path):
    users = ["a", "a", "b", "b"]
    rows = [eval_row(s, "ce", [0.2, 0.4, 0.3, 0.5], users) for s in (0, 1)]
    rows += [eval_row(s, "perce", [0.6, 0.7, 0.5, 0.9], users) for s in (0, 1)]
    keys = report.group_keys(rows)
    summary = report.summarize(rows, keys)
    text = tables.write_tables(summary, keys, tmp_path, ["outputs/hydra/claims_x"], None)
    table = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert [r["label"] for r in table] == ["loss=ce", "loss=perce"]
    ce, perce = table
    assert float(ce["rougeL_mean"]) == pytest.approx(0.35) and float(ce["rougeL_std"]) == 0.0
    assert ce["rougeL_n"] == "2" and ce["n_users"] == "2" and ce["n_examples"] == "4"
    assert ce["ci_resampled"] == "" and perce["ci_resampled"] == "crossed: seeds x users"
    assert ce["rougeL_delta"] == "" and ce["rougeL_gain"] == ""
    assert float(perce["rougeL_delta"]) == pytest.approx(0.325)
    assert float(perce["rougeL_gain"]) == pytest.approx(0.675 / 0.35 - 1)
    assert float(perce["rougeL_ci_low"]) <= float(perce["rougeL_delta"]) <= float(perce["rougeL_ci_high"])
    for row in table:  # every metric cell is a number or empty: no "0.0139 ± 0.0196" text
        for key, value in row.items():
            if key.endswith(("_mean", "_std", "_n", "_gain", "_delta", "_ci_low", "_ci_high")) and value:
                float(value)
    page = (tmp_path / "report.md").read_text()
    assert page.startswith("# Report: claims_x\n") and "Source: `outputs/hydra/claims_x`" in page
    assert "4 evals in 2 groups (swept: loss); test set: 4 targets from 2 users; seeds 0,1" in page
    assert "## Legend" in page and "**gain**" in page and "**Δ**" in page and "**\\***" in page
    assert "95% percentile, 2000 draws, crossed bootstrap: seeds x users" in page
    assert "| loss=perce | +0.3250 [" in page
    # the console text: narrow, rows labelled with the swept settings
    assert max(len(line) for line in text.splitlines()) <= 110
    assert "  loss=perce  " in text and "Δ +0.3250 [" in text


def test_claims_tables_condense_the_numeric_csv(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "claims_tables.py"
    spec = importlib.util.spec_from_file_location("claims_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    users = ["a", "a", "b", "b"]
    rows = [eval_row(s, "ce", [0.2, 0.4, 0.3, 0.5], users) for s in (0, 1)]
    rows += [eval_row(s, "perce", [0.6, 0.7, 0.5, 0.9], users) for s in (0, 1)]
    keys = report.group_keys(rows)
    tables.write_tables(report.summarize(rows, keys), keys, tmp_path, ["sweep"], None)
    table = module.condensed(tmp_path).splitlines()
    assert table[0] == "| group | seeds | rougeL | Δ rougeL vs CE [95% CI] |"
    assert table[2] == "| loss=ce | 0,1 | 0.3500 ± 0.0000 |  |"
    assert table[3].startswith("| loss=perce | 0,1 | 0.6750 ± 0.0000 | +0.3250 [+0.")
    note = "4 test targets from 2 users; Δ: method − CE, 95% interval resampling crossed: seeds x users"
    assert table[-1] == note + " (* excludes 0)."


@pytest.mark.parametrize("logged_steps", [[10], [5, 10], list(range(10, 110, 10))])
def test_token_loss_curves_show_every_group_even_from_one_logged_step(tmp_path, logged_steps):
    """A 15-step run with log_every 10 logs one point per curve: it must still be drawn (it used to be a bare
    one-point line, i.e. an empty plot)."""
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    def rows(personal, nonpersonal):
        return [
            {
                "history": [
                    {"step": s, "personal_loss": personal, "nonpersonal_loss": nonpersonal}
                    for s in logged_steps
                ]
            }
        ]

    summary = [{"label": "loss=ce", "rows": rows(0.1, 0.3)}, {"label": "loss=perce", "rows": rows(0.05, 0.4)}]
    path = tmp_path / "curves.png"
    plots.plot_token_losses(summary, path)
    pixels = imread(path)[..., :3]
    axes_area = pixels[: int(pixels.shape[0] * 0.6)]  # the legend (with its own colour samples) sits below
    for colour in ("C0", "C1"):
        near = np.abs(axes_area - np.array(to_rgb(colour))).sum(axis=-1) < 0.15
        assert near.sum() > 20, (colour, logged_steps)


def test_a_report_with_more_groups_than_ten_colours_draws_each_in_its_own(tmp_path, monkeypatch):
    """matplotlib's C0-C9 repeat: the claims methods report (14 groups) drew CE and PerCE at 450 steps in the
    same red. Every group's curve now has a colour of its own (read back from the figure's lines)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)  # keep the figure to read its lines
    from percontrast_cli.reporting import aloe_report, curves

    history = [{"step": s, "personal_loss": 1.0, "nonpersonal_loss": 0.5} for s in range(10, 110, 10)]

    def token_losses(count, path):
        summary = [{"label": f"group {i}", "rows": [{"history": history}]} for i in range(count)]
        plots.plot_token_losses(summary, path)

    def learning_curves(count, path):  # no CE group: every series is a solid, coloured line
        summary = [
            {"label": f"loss=perce, loss.alpha={i}, step={step}", "values": {"rougeL": [0.1 * step, 0.0]},
             "options": {"loss": "perce", "loss.alpha": i, curves.STEP: step}, "seeds": [0]}
            for i in range(count) for step in (0, 10)
        ]  # fmt: skip
        assert curves.plot_axis(summary, ["rougeL"], curves.STEP, "steps", path)

    def aloe_rounds(count, path):
        found = {"al": [3.0, 3.5], "low": [2.5, 3.0], "high": [3.5, 4.0]}
        aloe_report.plot_al([(f"group {i}", found) for i in range(count)], 2, path)

    for draw in (token_losses, learning_curves, aloe_rounds):
        for count in (3, 14, 25):
            draw(count, tmp_path / f"{draw.__name__}{count}.png")
            solid = [line for line in kept[-1].axes[0].lines if line.get_linestyle() == "-"]
            assert len(solid) == count, draw.__name__
            assert len({to_hex(line.get_color()) for line in solid}) == count, draw.__name__


def test_declared_primary_margin_and_the_chance_line(tmp_path):
    """report.primary labels the others secondary; report.margin runs a TOST at the interval's level; every
    report says how many of its intervals would exclude 0 by chance alone."""
    from omegaconf import OmegaConf

    from percontrast_cli.reporting import verdicts

    users = ["a", "a", "b", "b", "c", "c"]
    rows = [eval_row(s, "ce", [0.2, 0.4, 0.3, 0.5, 0.3, 0.4], users) for s in (0, 1)]
    rows += [eval_row(s, "perce", [0.21, 0.41, 0.3, 0.5, 0.31, 0.4], users) for s in (0, 1)]  # Δ ≈ +0.005
    for row in rows:
        row["metrics"]["persona_recall"] = 0.5
    keys = report.group_keys(rows)
    summary = report.summarize(rows, keys)
    declared = verdicts.Declared.from_config(
        OmegaConf.create({"primary": "persona_recall", "margin": "rougeL:0.02"})
    )
    assert (declared.primary, declared.margin_metric, declared.margin) == ("persona_recall", "rougeL", 0.02)
    declared.check({"persona_recall", "rougeL"})
    found = summary[1]["paired"]["rougeL"]
    assert -0.02 < found["low"] and found["high"] < 0.02
    assert verdicts.equivalence(found, 0.02) == "equivalent within ±0.02"
    assert verdicts.equivalence(found, 0.005) == "not shown equivalent within ±0.005"  # the interval is wider
    text = tables.write_tables(summary, keys, tmp_path, ["sweep"], None, declared)
    page = (tmp_path / "report.md").read_text()
    assert len(summary[1]["paired"]) == 2  # rougeL, persona_recall
    n = 1  # persona_recall is 0.5 on every example of both sides: identical, no interval that could exclude 0
    chance = f"{n} Δ intervals in this report, "
    assert "(not counted: 1 more that are 0 on every example, shown as `identical`)" in page
    assert "| identical |" in page and "+0.0000 [+0.0000, +0.0000]" not in page
    for shown in (page, text.replace("\n  ", " ")):
        assert "TOST rougeL, loss=perce: Δ +0.0050 [" in shown and "equivalent within ±0.02" in shown
        assert chance in shown and f"about {0.05 * n:.1f} of them would exclude 0 by chance alone" in shown
        assert "Primary metric: persona_recall; every other metric is secondary" in shown
    assert "Δ rougeL ↑ (secondary)" in page and "Δ persona_recall ↑ (primary)" in page
    assert max(len(line) for line in text.splitlines()) <= 110
    assert "judge system-level agreement" not in page  # no judge scores here
    for index, row in enumerate(rows):  # four checkpoints: the judge ranks them as persona recall does
        row["metrics"].update(judge_score=1.0 + index, persona_recall=0.1 * index)
    assert "Spearman +1.00 between the mean judge score and persona recall over 4 evals" in "\n".join(
        verdicts.declared_lines(summary, declared)
    )
    with pytest.raises(PercontrastError, match="report.primary: these evals have no metric 'nope'"):
        verdicts.Declared(primary="nope").check({"rougeL"})
    for margin in ("rougeL", "rougeL:-1", "rougeL:x", ":0.1"):
        with pytest.raises(PercontrastError, match="must be <metric>:<δ> with δ > 0"):
            verdicts.Declared.from_config(OmegaConf.create({"primary": None, "margin": margin}))


def test_a_weighted_group_without_its_ce_is_named_and_an_undefined_difference_is_no_number():
    """No CE group with the same settings: a WARNING line names the setting that keeps them apart (not a
    silent missing Δ). A ratio undefined on one side (0/0 in every seed) has no Δ, not `nan`."""
    from percontrast_cli.reporting import verdicts

    users = ["a", "a", "b", "b"]
    rows = [eval_row(s, "ce", [0.2, 0.4, 0.3, 0.5], users) for s in (0, 1)]
    rows += [eval_row(s, "perce", [0.6, 0.7, 0.5, 0.9], users) for s in (0, 1)]
    for row in rows[:2]:
        row["options"]["train.warmup_lr"] = 0.002
    keys = report.group_keys(rows)
    summary = report.summarize(rows, keys)
    lines = verdicts.declared_lines(summary, verdicts.NOTHING_DECLARED)
    assert any(
        line.startswith("WARNING loss=perce") and "train.warmup_lr=None vs CE's 0.002" in line
        for line in lines
    ), lines
    for row in rows:  # the same effective warm-up lr: one setting, the pair is made, no warning
        row["options"].update({"model.from_scratch": True, "train.warmup_steps": 4, "train.lr": 0.002})
        row["options"].update(report.warmup_setting(row["options"]))
    summary = report.summarize(rows, report.group_keys(rows))
    assert summary[1]["paired"]["rougeL"]["diff"] == pytest.approx(0.325)
    assert not verdicts.unpaired_lines(summary)
    for row in rows:  # a pretrained model has no warm-up: no warm-up lr
        row["options"]["model.from_scratch"] = False
        assert report.warmup_setting(row["options"]) == {"train.warmup_lr": None}
    for row in rows[2:]:  # no persona field present on PerCE's side: its recall is 0/0
        for example in row["examples"].values():
            example.update(persona_present=[], persona_recalled=[])
    assert stats.paired_difference(rows[2:], rows[:2], "persona_recall") is None


def test_a_report_names_the_machines_when_its_checkpoints_come_from_several():
    """A retraining on another CPU is not bit-identical: a report over checkpoints from two machines says so
    (the base model's eval, machine None, does not count); one machine, or none recorded, says nothing."""
    from percontrast_cli.reporting import verdicts

    users = ["a", "a", "b", "b"]
    rows = [eval_row(s, loss, [0.2, 0.4, 0.3, 0.5], users) for s in (0, 1) for loss in ("ce", "perce")]
    for index, row in enumerate(rows):
        row["id"] = f"eval{index}"
    summary = report.summarize(rows, report.group_keys(rows))
    assert verdicts.machine_line(summary) is None  # no machine recorded (artifacts from before it was)
    for row in rows:
        row["machine"] = report.machine_of({"machine": {"cpu": "AMD EPYC; bf16: fast", "gpus": []}})
    rows[0]["machine"] = None  # a base model's eval: not trained here
    assert verdicts.machine_line(summary) is None
    rows[1]["machine"] = report.machine_of({"machine": {"cpu": "Xeon; bf16: fast", "gpus": ["H100", "H100"]}})
    line = verdicts.machine_line(summary)
    assert line.startswith("the checkpoints were trained on 2 machines (AMD EPYC: 2, Xeon + H100: 1)")
    assert line in verdicts.declared_lines(summary, verdicts.NOTHING_DECLARED)
    assert report.machine_of({}) == "unrecorded"
