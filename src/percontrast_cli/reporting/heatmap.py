"""Token heatmaps of PerContrast scores: rich text for the terminal and a standalone HTML page.

One fixed, diverging colour scale for every example (white at 0, red where the profile raises the token, blue
where it lowers it), so a page of noise looks pale and a strong score looks strong: colour strength grows with
``log(1 + |s|)`` up to ``|s| = scale`` (PerCE's upper clip point, 5 in the paper), where it saturates. The
HTML page shows the request and the retrieved profile above the target, a colour bar with PerCE's clip points
(where its weight stops following the score) marked, a toggle that writes every token's score under it (open
the page with ``#values`` to start with it on, e.g. for a screenshot), and a note when every score is 0.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

from rich.text import Text

PAPER_CLIP = (0.8, 5.0)  # PerCE's w = clip(s, 0.8, 5.0) (losses.token_weights, weighting clip_pir)
NEGATIVE, POSITIVE = (33, 102, 172), (202, 0, 32)  # the ends of the scale (ColorBrewer RdBu)


@dataclass
class ScoredToken:
    text: str
    score: float
    personal: bool


@dataclass
class PromptView:
    """What the model was given before the target: the request and the retrieved profile items (most relevant
    first), of which the first ``kept`` fitted into model.max_length (None: all of them)."""

    request: str
    profile: list[str] = field(default_factory=list)
    kept: int | None = None


def clip_points(loss_cfg=None) -> tuple[float, float]:
    """The scores at which a PerContrast weighting's weight reaches its floor and its cap (the paper's PerCE
    without a PerContrast loss config): clip_pir clips s itself; exp_pir and linear_pir start at s = 0 and cap
    at s = log(clip_max)."""
    if loss_cfg is None or loss_cfg.get("weighting") not in ("clip_pir", "exp_pir", "linear_pir"):
        return PAPER_CLIP
    if loss_cfg.weighting == "clip_pir":
        return float(loss_cfg.clip_min), float(loss_cfg.clip_max)
    return 0.0, math.log(float(loss_cfg.clip_max))


def scale_for(clip: tuple[float, float]) -> float:
    """The score at which the colour saturates: PerCE's cap, and never below the paper's 5."""
    return max(PAPER_CLIP[1], clip[1])


def strength(score: float, scale: float) -> float:
    """0 at s = 0, 1 at |s| >= scale, logarithmic in between (a 0.1 is faint, a 1 clearly visible)."""
    return min(math.log1p(abs(score)) / math.log1p(scale), 1.0)


def colour(score: float, scale: float = PAPER_CLIP[1]) -> tuple[int, int, int]:
    """White at 0, towards red for a positive score (the profile raises the token), blue for a negative."""
    end, t = (POSITIVE if score > 0 else NEGATIVE), strength(score, scale)
    return tuple(round(255 + (c - 255) * t) for c in end)


def position(score: float, scale: float) -> float:
    """Where a score sits on the colour bar, in percent (-scale at 0, 0 at 50, +scale at 100)."""
    return 50.0 + 50.0 * math.copysign(strength(score, scale), score)


def terminal_heatmap(tokens: list[ScoredToken], scale: float = PAPER_CLIP[1]) -> Text:
    text = Text()
    for token in tokens:
        r, g, b = colour(token.score, scale)
        ink = "white" if strength(token.score, scale) > 0.6 else "black"
        style = f"{ink} on rgb({r},{g},{b})" + (" underline" if token.personal else "")
        text.append(token.text, style=style)
    return text


def _rgb(score: float, scale: float) -> str:
    return "rgb({},{},{})".format(*colour(score, scale))


def colour_bar(scale: float, clip: tuple[float, float]) -> str:
    """The scale as a gradient bar, with score ticks above it and the clip points marked below it."""
    stops = ", ".join(
        f"{_rgb(s, scale)} {position(s, scale):.2f}%"
        for s in sorted(
            {math.copysign(scale * f, sign) for f in (0, 0.02, 0.1, 0.3, 0.6, 1) for sign in (-1, 1)}
        )
    )
    ticks = "".join(
        f'<span class="tick" style="left:{position(s, scale):.2f}%">{s:g}</span>'
        for s in sorted({-scale, -1.0, 0.0, 1.0, scale})
    )
    low, high = clip
    marks = "".join(
        # a label near the right end is written to the left of its mark, so it stays on the page
        f'<span class="clip{" right" if position(s, scale) > 75 else ""}" data-clip="{name}" '
        f'style="left:{position(s, scale):.2f}%">{name} {s:g}</span>'
        for name, s in (("clip_min", low), ("clip_max", high))
    )
    return (
        '<figure class="colour-bar" aria-label="colour scale">'
        f'<div class="ticks">{ticks}</div>'
        f'<div class="bar" style="background:linear-gradient(to right, {stops})"></div>'
        f'<div class="marks">{marks}</div>'
        "<figcaption>PerContrast score s = log p(token | profile) - log p(token | counterfactual); the same "
        f"scale on every page (saturates at |s| = {scale:g}). PerCE's weight is clip(s, {low:g}, {high:g}): "
        f"every token left of clip_min gets {low:g}, every token right of clip_max gets {high:g}."
        "</figcaption>"
        "</figure>"
    )


def _prompt_section(prompt: PromptView | None) -> str:
    if prompt is None:
        return ""
    kept = len(prompt.profile) if prompt.kept is None else prompt.kept
    items = "".join(
        f'<li class="{"kept" if i < kept else "dropped"}">{html.escape(doc)}'
        + ("" if i < kept else " <em>(not in the prompt: cut to fit model.max_length)</em>")
        + "</li>"
        for i, doc in enumerate(prompt.profile)
    )
    profile = (
        f'<ol class="profile">{items}</ol>'
        if prompt.profile
        else '<p class="profile empty">No profile items (retrieval.k=0, or the user has none).</p>'
    )
    return (
        '<section id="request"><h2>Request</h2>'
        f'<pre class="request">{html.escape(prompt.request)}</pre></section>'
        f'<section id="profile"><h2>Profile: {kept} of {len(prompt.profile)} retrieved items in the prompt, '
        f"most relevant first</h2>{profile}</section>"
    )


def _notes(tokens: list[ScoredToken], prompt: PromptView | None) -> str:
    notes = []
    if tokens and all(t.score == 0 for t in tokens):
        notes.append(
            '<div class="note" id="all-zero"><strong>Every score is 0.</strong> The model gave every target '
            "token the same probability with and without the profile: the factual and counterfactual prompts "
            "were identical (the profile was cut away to fit model.max_length, retrieval.k=0, or no profile "
            "items). PerCE trains on no signal here.</div>"
        )
    if prompt is not None and prompt.profile and prompt.kept == 0:
        notes.append(
            '<div class="note" id="profile-cut"><strong>The whole profile was cut away</strong> to fit '
            "model.max_length: raise it (the task's own task.max_length) or lower retrieval.k.</div>"
        )
    return "".join(notes)


STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #222; }
pre.request, .text { white-space: pre-wrap; font-family: monospace; }
pre.request { background: #f4f4f4; padding: .5em; }
ol.profile li { margin: .3em 0; font-size: .9em; }
ol.profile li.dropped { color: #999; text-decoration: line-through; }
.text { line-height: 2.4; font-size: 1.05em; }
.tok.personal { text-decoration: underline; text-decoration-thickness: 2px; }
.tok.light { color: #fff; }
body.values .tok::after, body:has(#show-values:checked) .tok::after {
  content: attr(data-s); font-size: .7em; vertical-align: sub; color: #000; background: #fff;
  margin: 0 .15em; padding: 0 .1em; border: 1px solid #ccc;
}
.colour-bar { margin: 1em 0 1.5em; }
.colour-bar .bar { height: 1.2em; border: 1px solid #888; }
.colour-bar .ticks, .colour-bar .marks { position: relative; height: 1.3em; font-size: .8em; }
.colour-bar .tick, .colour-bar .clip { position: absolute; transform: translateX(-50%); white-space: nowrap; }
.colour-bar .clip { font-weight: bold; border-left: 2px solid #000; padding-left: 2px; transform: none; }
.colour-bar .clip::before { content: ""; position: absolute; left: -2px; top: -1.5em; height: 1.5em;
  border-left: 2px solid #000; }
.colour-bar .clip.right { transform: translateX(-100%); border-left: none; border-right: 2px solid #000;
  padding: 0 2px 0 0; }
.colour-bar .clip.right::before { left: auto; right: -2px; }
.colour-bar figcaption { font-size: .85em; color: #444; margin-top: .3em; }
.note { background: #fff3cd; border: 2px solid #d39e00; padding: .6em; margin: 1em 0; }
"""

SCRIPT = """
const box = document.getElementById('show-values');
const apply = () => document.body.classList.toggle('values', box.checked);
box.addEventListener('change', apply);
if (location.hash === '#values') { box.checked = true; }
apply();
"""


def html_heatmap(
    tokens: list[ScoredToken],
    title: str,
    top_k: int = 10,
    prompt: PromptView | None = None,
    clip: tuple[float, float] = PAPER_CLIP,
) -> str:
    """The page: title and summary, the request and the profile, the colour bar, the target (one coloured
    ``<span class="tok">`` per token, its score in ``title`` and ``data-s``; personal spans underlined), the
    top-k tokens."""
    scale = scale_for(clip)
    spans = []
    for token in tokens:
        css = (
            "tok"
            + (" personal" if token.personal else "")
            + (" light" if strength(token.score, scale) > 0.6 else "")
        )
        spans.append(
            f'<span class="{css}" style="background:{_rgb(token.score, scale)}" data-s="{token.score:+.2f}" '
            f'title="s={token.score:+.4f}">{html.escape(token.text)}</span>'
        )
    top = sorted(tokens, key=lambda t: t.score, reverse=True)[:top_k]
    items = "".join(
        f"<li><code>{html.escape(t.text)}</code> {t.score:+.4f}{' (personal)' if t.personal else ''}</li>"
        for t in top
    )
    scores = [t.score for t in tokens] or [0.0]
    low, high = clip
    summary = (
        f"{len(tokens)} target tokens, {sum(t.personal for t in tokens)} in ground-truth personal spans "
        f"(underlined); scores from {min(scores):+.3f} to {max(scores):+.3f}; "
        f"{sum(s > low for s in scores)} above clip_min {low:g}, {sum(s >= high for s in scores)} at or "
        f"above clip_max {high:g}."
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="summary">{summary}</p>
{_notes(tokens, prompt)}{_prompt_section(prompt)}
<section id="target"><h2>Target, coloured by PerContrast score</h2>
{colour_bar(scale, clip)}
<p><label><input type="checkbox" id="show-values"> show each token's score</label>
(hover a token for 4 decimals; open this page with <code>#values</code> to start with scores shown)</p>
<div class="text">{"".join(spans)}</div></section>
<section id="top"><h2>Top {len(top)} tokens</h2><ol>{items}</ol></section>
<script>{SCRIPT}</script>
</body></html>
"""
