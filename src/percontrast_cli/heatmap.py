"""Token heatmaps of PerContrast scores: rich text for the terminal and a standalone HTML page."""

from __future__ import annotations

import html
from dataclasses import dataclass

from rich.text import Text


@dataclass
class ScoredToken:
    text: str
    score: float
    personal: bool


def colour(score: float, scale: float) -> tuple[int, int, int]:
    """White at 0, red for positive contrast (profile raises the token), blue for negative."""
    strength = min(abs(score) / scale, 1.0) if scale > 0 else 0.0
    fade = int(255 * (1 - 0.75 * strength))
    return (255, fade, fade) if score > 0 else (fade, fade, 255)


def scale_of(tokens: list[ScoredToken]) -> float:
    return max((abs(t.score) for t in tokens), default=1.0) or 1.0


def terminal_heatmap(tokens: list[ScoredToken]) -> Text:
    scale = scale_of(tokens)
    text = Text()
    for token in tokens:
        r, g, b = colour(token.score, scale)
        style = f"black on rgb({r},{g},{b})" + (" underline" if token.personal else "")
        text.append(token.text, style=style)
    return text


def html_heatmap(tokens: list[ScoredToken], title: str, top_k: int = 10) -> str:
    """One coloured <span class="tok"> per target token, score in its title; personal spans underlined."""
    scale = scale_of(tokens)
    spans = []
    for token in tokens:
        r, g, b = colour(token.score, scale)
        css_class = "tok personal" if token.personal else "tok"
        spans.append(
            f'<span class="{css_class}" style="background:rgb({r},{g},{b})" '
            f'title="s={token.score:+.4f}">{html.escape(token.text)}</span>'
        )
    top = sorted(tokens, key=lambda t: t.score, reverse=True)[:top_k]
    items = "".join(
        f"<li><code>{html.escape(t.text)}</code> {t.score:+.4f}{' (personal)' if t.personal else ''}</li>"
        for t in top
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; }}
.text {{ white-space: pre-wrap; font-family: monospace; line-height: 1.8; }}
.tok.personal {{ text-decoration: underline; text-decoration-thickness: 2px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Colour: PerContrast score s = log p(token | with profile) - log p(token | counterfactual); red positive,
blue negative, scale ±{scale:.3f}. Underlined: ground-truth personal spans. Hover a token for its score.</p>
<div class="text">{"".join(spans)}</div>
<h2>Top {len(top)} tokens</h2><ol>{items}</ol>
</body></html>
"""
