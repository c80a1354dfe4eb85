"""The report's figures (matplotlib, imported only when a report draws)."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from percontrast_cli.reporting.metric_table import arrow
from percontrast_cli.reporting.stats import excludes_zero, interval_description, non_loss_options


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


LEGEND = {"fontsize": 8, "frameon": False}


def colours(count: int) -> list:
    """One distinct colour per group: matplotlib's C0-C9 repeat from the eleventh (a 14-group report drew CE
    and PerCE at 450 steps in one red); tab20 up to 20 groups, a continuous map beyond."""
    if count <= 10:
        return [f"C{index}" for index in range(count)]
    import matplotlib

    if count <= 20:
        return [matplotlib.colormaps["tab20"](index) for index in range(count)]
    return [matplotlib.colormaps["turbo"](index / (count - 1)) for index in range(count)]


def plot_metric_vs(summary: list[dict], metric: str, x_key: str, path: Path, log_x: bool = False) -> None:
    """`metric` (mean ± std over seeds) against one swept option, a line per setting of the others:
    loss.alpha (CE drawn as its own labelled reference: a dashed line with its ± std band) or train.lr
    (where CE breaks: CE is a line of its own)."""
    plt = pyplot()
    alpha_plot = x_key == "loss.alpha"
    series: dict[str, list[tuple]] = {}
    references = []
    for entry in summary:
        options = entry["options"]
        if metric not in entry["values"]:
            continue
        mean, std, _ = entry["values"][metric]
        if alpha_plot and options.get("loss") == "ce":
            references.append((entry, mean, std or 0.0))
            continue
        if x_key not in options and not alpha_plot:
            continue
        label = ", ".join(part for part in entry["label"].split(", ") if not part.startswith(f"{x_key}="))
        series.setdefault(label or metric, []).append((float(options.get(x_key, 1.0)), mean, std or 0.0))
    fig, ax = plt.subplots(figsize=(6, 4))
    palette = colours(len(series) + len(references))
    for index, (label, points) in enumerate(sorted(series.items())):
        xs, ys, errs = zip(*sorted(points), strict=True)
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, color=palette[index], label=label)
    for index, (entry, mean, std) in enumerate(references):
        context = ", ".join(f"{k}={v}" for k, v in non_loss_options(entry["options"]).items())
        label = "CE (reference)" + (f", {context}" if context and len(references) > 1 else "")
        color = "black" if len(references) == 1 else palette[len(series) + index]
        ax.axhline(mean, linestyle="--", color=color, linewidth=1.2, label=label)
        if std:
            ax.axhspan(mean - std, mean + std, color=color, alpha=0.1)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("loss.alpha (PerCE strength)" if alpha_plot else x_key)
    ax.set_ylabel(metric + arrow(metric))
    ax.set_title(f"{metric} vs {x_key} (mean ± std over seeds)", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, **LEGEND)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_differences(summary: list[dict], metrics: list[str], path: Path) -> None:
    """Δ vs CE with its 95% interval, one panel per metric, a row per weighted-loss group: the report's
    comparison at a glance (filled: the interval excludes 0)."""
    plt = pyplot()
    metrics = [m for m in metrics if any(m in e.get("paired", {}) for e in summary)]
    groups = [e for e in summary if e.get("paired")]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(2.8 * len(metrics) + 2.5, 0.45 * len(groups) + 1.4), squeeze=False,
        sharey=True, layout="constrained",
    )  # fmt: skip
    palette = colours(len(groups))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for row, entry in enumerate(groups):
            found = entry["paired"].get(metric)
            if found is None:
                continue
            error = [[found["diff"] - found["low"]], [found["high"] - found["diff"]]]
            ax.errorbar(
                found["diff"], row, xerr=error, fmt="o", capsize=3, color=palette[row],
                markerfacecolor=palette[row] if excludes_zero(found) else "white",
            )  # fmt: skip
        ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(f"Δ {metric}{arrow(metric)}", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0][0].set_yticks(range(len(groups)), [e["label"] for e in groups], fontsize=8)
    axes[0][0].invert_yaxis()
    title = f"method − CE, mean over seeds [{interval_description(summary)}]; filled: excludes 0"
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_transfer_matrix(summary: list[dict], metric: str, path: Path) -> None:
    """Train task x eval task, one panel per loss (mean over seeds), plus each weighted loss minus CE. The
    value panels share one colour scale, and the difference panels one symmetric scale around 0, so equal
    colours are equal numbers across panels."""
    plt = pyplot()
    by_loss: dict[str, dict[tuple[str, str], float]] = {}
    for entry in summary:
        if metric in entry["values"]:
            options = entry["options"]
            cell = (options["train_task"], options["task.name"])
            by_loss.setdefault(str(options.get("loss", "?")), {})[cell] = entry["values"][metric][0]
    panels = dict(sorted(by_loss.items()))
    if "ce" in by_loss:
        ce = by_loss["ce"]
        for loss, cells in sorted(by_loss.items()):
            if loss != "ce":
                panels[f"{loss} − ce"] = {c: v - ce[c] for c, v in cells.items() if c in ce}
    tasks = sorted({t for cells in by_loss.values() for cell in cells for t in cell})
    values = [v for title, cells in panels.items() if " − " not in title for v in cells.values()]
    differences = [abs(v) for title, cells in panels.items() if " − " in title for v in cells.values()]
    scales = {
        False: {"cmap": "viridis", "vmin": min(values), "vmax": max(values)},
        True: {
            "cmap": "RdBu",
            "vmin": -max(differences, default=1e-9),
            "vmax": max(differences, default=1e-9),
        },
    }
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.4 * len(panels) + 1.6, 3.8), squeeze=False, layout="constrained"
    )
    images = {}
    for ax, (title, cells) in zip(axes[0], panels.items(), strict=True):
        grid = np.full((len(tasks), len(tasks)), np.nan)
        for (train_task, eval_task), value in cells.items():
            grid[tasks.index(train_task), tasks.index(eval_task)] = value
        difference = " − " in title
        images[difference] = image = ax.imshow(grid, **scales[difference])
        for i in range(len(tasks)):
            for j in range(len(tasks)):
                if not np.isnan(grid[i, j]):
                    shade = image.norm(grid[i, j])  # 0..1 on the panel's colour scale
                    dark = abs(shade - 0.5) > 0.3 if difference else shade < 0.6
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:+.3f}" if difference else f"{grid[i, j]:.3f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if dark else "black",
                    )
        short = [t.removeprefix("persona_") for t in tasks]
        ax.set_xticks(range(len(tasks)), short, fontsize=8)
        ax.set_yticks(range(len(tasks)), short, fontsize=8)
        ax.set_xlabel("eval task")
        if ax is axes[0][0]:
            ax.set_ylabel("train task")
        ax.set_title(title, fontsize=9)
    for difference, image in images.items():
        label = f"Δ {metric} (method − CE)" if difference else metric
        kind = [ax for ax, title in zip(axes[0], panels, strict=True) if (" − " in title) == difference]
        fig.colorbar(image, ax=kind, fraction=0.046, label=label)
    fig.suptitle(
        f"{metric}: train task x eval task (mean over seeds; one colour scale per kind)", fontsize=10
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)


FEW_LOGGED_STEPS = 5  # a curve with fewer logged steps than this gets markers


def plot_token_losses(summary: list[dict], path: Path) -> None:
    """Personal vs non-personal token loss over training steps, one colour per group (one legend entry per
    group: the line style says which tokens), seeds averaged."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4))
    palette = colours(len(summary))
    for index, entry in enumerate(summary):
        labelled = False
        for key, style in (("personal_loss", "-"), ("nonpersonal_loss", ":")):
            by_step: dict[int, list[float]] = {}
            for row in entry["rows"]:
                for log in row["history"]:
                    if key in log:
                        by_step.setdefault(log["step"], []).append(log[key])
            if by_step:
                steps = sorted(by_step)
                few = len(steps) < FEW_LOGGED_STEPS  # a one-point line draws nothing
                ax.plot(
                    steps,
                    [statistics.mean(by_step[s]) for s in steps],
                    style,
                    color=palette[index],
                    marker="o" if few else None,
                    markerfacecolor=palette[index] if style == "-" else "none",
                    label="_nolegend_" if labelled else entry["label"],
                )
                labelled = True
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("token NLL")
    ax.set_title("personal (solid) vs non-personal (dotted) target-token loss", fontsize=10)
    if ax.lines:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, **LEGEND)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
