"""The heatmap page in a real headless browser (Debian's chromium): request and profile above the target, a
fixed colour scale with PerCE's clip points, scores on a toggle, a note when every score is 0 (issue 20)."""

import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from omegaconf import OmegaConf

from percontrast_cli.reporting.heatmap import (
    PromptView,
    ScoredToken,
    clip_points,
    colour,
    html_heatmap,
    position,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (`make test` installs it: apt-get install chromium)",
)

TOKENS = [
    ScoredToken("Dear", 0.0, False),
    ScoredToken(" Anna", 3.2, True),
    ScoredToken(",", -0.4, False),
    ScoredToken(" your", 0.05, False),
    ScoredToken(" Nike", 6.0, True),
    ScoredToken(" order", -2.0, False),
    ScoredToken(" <shipped>", 0.9, False),
]
PROMPT = PromptView(
    "Write an email about the order & its delivery.",
    ["Anna likes Nike shoes.", "Anna lives in Oslo.", "Signs off with: Cheers, Anna"],
    kept=2,
)


def browse(tmp_path, page: str, *, fragment: str = "", screenshot: str | None = None) -> str:
    """Chromium's DOM after the page's scripts ran (or a screenshot of it), offline and sandboxed to tmp."""
    path = tmp_path / "page.html"
    path.write_text(page)
    profile = tmp_path / "chromium-profile"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
        "--window-size=1000,900",
    ]  # fmt: skip
    command.append(f"--screenshot={screenshot}" if screenshot else "--dump-dom")
    command.append(f"{path.as_uri()}{fragment}")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Dom(HTMLParser):
    """The elements of a dumped DOM in document order: (tag, attributes, text directly inside)."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[tuple[str, dict, list[str]]] = []
        self.open: list[int] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), []))
        if tag not in ("meta", "input", "br", "link"):
            self.open.append(len(self.elements) - 1)

    def handle_endtag(self, tag):
        while self.open:
            if self.elements[self.open.pop()][0] == tag:
                break

    def handle_data(self, data):
        if self.open:
            self.elements[self.open[-1]][2].append(data)

    def find(self, tag=None, **attrs):
        return [
            (i, a, "".join(t))
            for i, (name, a, t) in enumerate(self.elements)
            if (tag is None or name == tag) and all(v in (a.get(k) or "").split() for k, v in attrs.items())
        ]

    def first(self, tag=None, **attrs):
        found = self.find(tag, **attrs)
        assert found, (tag, attrs)
        return found[0]


@needs_chromium
def test_page_shows_request_and_profile_above_the_target_with_a_marked_colour_bar(tmp_path):
    dom = Dom(browse(tmp_path, html_heatmap(TOKENS, "estimate abc, example 0", prompt=PROMPT)))
    request, profile, target = (dom.first("section", id=name)[0] for name in ("request", "profile", "target"))
    assert request < profile < target
    assert dom.first("pre", **{"class": "request"})[2] == PROMPT.request
    items = dom.find("li", **{"class": "kept"}) + dom.find("li", **{"class": "dropped"})
    assert [text.strip() for _, _, text in items] == PROMPT.profile
    assert len(dom.find("li", **{"class": "dropped"})) == 1
    assert any(text.startswith("Profile: 2 of 3 retrieved items") for _, _, text in dom.find("h2"))

    spans = dom.find("span", **{"class": "tok"})
    assert [text for _, _, text in spans] == [t.text for t in TOKENS]
    assert all(target < index for index, _, _ in spans)
    assert [a["data-s"] for _, a, _ in spans] == [f"{t.score:+.2f}" for t in TOKENS]
    assert [("personal" in a["class"]) for _, a, _ in spans] == [t.personal for t in TOKENS]

    # PerCE's clip points on the bar, where the scale puts them
    marks = {a["data-clip"]: (a, text) for _, a, text in dom.find("span", **{"class": "clip"})}
    assert marks["clip_min"][1] == "clip_min 0.8" and marks["clip_max"][1] == "clip_max 5"
    assert marks["clip_min"][0]["style"] == f"left:{position(0.8, 5.0):.2f}%"
    assert marks["clip_max"][0]["style"] == "left:100.00%"
    ticks = [text for _, _, text in dom.find("span", **{"class": "tick"})]
    assert ticks == ["-5", "-1", "0", "1", "5"]
    assert "linear-gradient" in dom.first("div", **{"class": "bar"})[1]["style"]
    assert not dom.find(id="all-zero")


@needs_chromium
def test_the_values_toggle_is_on_with_values_in_the_url_and_shows_in_a_screenshot(tmp_path):
    page = html_heatmap(TOKENS * 4, "t", prompt=PROMPT)
    assert "values" not in Dom(browse(tmp_path, page)).first("body")[1].get("class", "")
    assert "values" in Dom(browse(tmp_path, page, fragment="#values")).first("body")[1]["class"].split()

    Image = pytest.importorskip("PIL.Image")
    plain, shown = tmp_path / "plain.png", tmp_path / "values.png"
    browse(tmp_path, page, screenshot=str(plain))
    browse(tmp_path, page, fragment="#values", screenshot=str(shown))
    a, b = Image.open(plain).convert("RGB"), Image.open(shown).convert("RGB")
    assert a.size == b.size
    changed = sum(p != q for p, q in zip(a.getdata(), b.getdata(), strict=True))
    assert changed > 1000  # the scores written under the tokens
    # the colour bar's saturated red end is drawn
    assert sum(p == colour(5.0) for p in a.getdata()) > 100


@needs_chromium
def test_all_zero_scores_and_a_cut_profile_get_a_visible_note(tmp_path):
    zeros = [ScoredToken(t.text, 0.0, t.personal) for t in TOKENS]
    page = html_heatmap(zeros, "t", prompt=PromptView("req", ["a", "b"], kept=0))
    dom = Dom(browse(tmp_path, page))
    note = dom.first("div", id="all-zero")
    assert "Every score is 0." in "".join(t for _, _, t in dom.find("strong"))
    assert note[0] < dom.first("section", id="target")[0]  # above the target, where it is seen first
    assert dom.find("div", id="profile-cut")


def test_the_colour_scale_is_fixed_not_per_example():
    quiet = html_heatmap([ScoredToken("a", 0.05, False)], "t")
    loud = html_heatmap([ScoredToken("a", 0.05, False), ScoredToken("b", 4.0, False)], "t")
    style = 'style="background:rgb({},{},{})" data-s="+0.05"'.format(*colour(0.05))
    assert style in quiet and style in loud
    assert colour(0.05) != colour(0.5) != colour(5.0) == colour(50.0)  # saturates at PerCE's cap
    assert colour(0.0) == (255, 255, 255)
    r, g, b = colour(-1.0)
    assert b > r and b > g  # negative: blue


def test_clip_points_follow_the_loss_weighting():
    perce = OmegaConf.create({"weighting": "clip_pir", "clip_min": 0.5, "clip_max": 8.0})
    assert clip_points(perce) == (0.5, 8.0)
    exp = OmegaConf.create({"weighting": "exp_pir", "clip_min": 0.8, "clip_max": 5.0})
    assert clip_points(exp) == (0.0, pytest.approx(1.6094, abs=1e-4))
    assert clip_points(OmegaConf.create({"weighting": "none"})) == (0.8, 5.0)  # the paper's PerCE
    assert clip_points(None) == (0.8, 5.0)


@needs_chromium
@pytest.mark.slow
def test_inspect_page_of_a_real_estimate_renders_its_prompt(tmp_path):
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(tmp_path / "out")}

    def cli(*args):
        result = subprocess.run(
            [sys.executable, "-m", "percontrast_cli.cli", *args], capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result

    cli("estimate", "experiment=miniature")
    page = tmp_path / "heat.html"
    shown = cli("inspect", "experiment=miniature", "estimate=latest", "example=1", f"inspect.out={page}")
    assert f"HTML heatmap: {page}" in shown.stdout
    # the example's loss under each normaliser (PerCE's weights are >= 0: weights and abs_weights agree)
    rows = {
        line.split()[1]: float(line.split()[3])
        for line in shown.stdout.splitlines()
        if line.startswith("│") and line.split()[1] in ("tokens", "weights", "abs_weights")
    }
    assert set(rows) == {"tokens", "weights", "abs_weights"} and rows["weights"] == rows["abs_weights"]
    dom = Dom(browse(tmp_path, page.read_text()))
    request = dom.first("pre", **{"class": "request"})[2]
    assert request.strip() and dom.first("section", id="request")[0] < dom.first("section", id="target")[0]
    assert len(dom.find("li", **{"class": "kept"})) == 5  # retrieval.k items, all in the prompt
    assert len(dom.find("span", **{"class": "tok"})) > 10
