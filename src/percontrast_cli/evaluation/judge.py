"""An LLM judge of personalization: a 1-5 score for a response, given the user and the request.

The score is read without sampling and without parsing (``judge.mode=expected``): the judge's next-token
distribution right after the prompt, restricted to the tokens "1".."5" and renormalised over them, gives the
expected score sum_s s * p(s), a number in [1, 5] that never fails and keeps the judge's uncertainty (a
judge torn between 3 and 4 says 3.5, not whichever digit greedy decoding happens to pick). A greedy reply
read as an integer is ``judge.mode=parsed`` (ALOE's original reads an integer from a judge it samples at
temperature 1; this mode decodes greedily, so it is not the original's protocol); there a reply without an
integer 1-5 is a parse failure, counted and left out of the means.

On persona tasks the eval also reports the judge's agreement with ground truth: Spearman's rank correlation
between the judge's score and persona recall (the share of the user's persona values the generation
contains) over the test examples, so a user sees whether the judge they picked can be trusted. A small
judge (SmolLM2-135M) runs here as a smoke test; real use needs a capable judge (a 7B+ instruct model).
How sure the judge is shows beside its score: the probability it put on the score tokens at all, and its
accuracy at telling a reference from the same reference with another user's values (judge_checks.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from percontrast_cli.data.encode import length_batches, pad_left
from percontrast_cli.data.prompts import select_profile
from percontrast_cli.data.retrieval import Retriever
from percontrast_cli.data.schema import Example
from percontrast_cli.evaluation.chat import (
    Decoding,
    generate_replies,
    prompt_ids,
    render_chat,
    strip_reasoning,
)
from percontrast_cli.evaluation.judge_checks import mass_metrics, swap_accuracy
from percontrast_cli.modeling.load import resolve_dtype
from percontrast_cli.modeling.named import NONE, NamedModel, resolve_named
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.runtime.progress import say, track
from percontrast_cli.store.artifacts import ArtifactStore

SCORES = (1, 2, 3, 4, 5)
MODES = ("expected", "parsed")


def enabled(spec) -> bool:
    return spec not in NONE


def score_token_ids(tokenizer) -> list[list[int]]:
    """Per score 1..5, the vocabulary ids a reply can give that score with: the digit alone and after a space
    (' 5' is its own token in some vocabularies; a sentencepiece '▁' prefix decodes away). A score's
    probability is the sum over its ids."""
    table = []
    for score in SCORES:
        digit, found = str(score), set()
        for text in (digit, f" {digit}"):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if ids and tokenizer.decode(ids[-1:]).strip() == digit:
                found.add(ids[-1])
        if not found:
            raise PercontrastError(f"the judge's tokenizer has no token for the score {digit!r}")
        table.append(sorted(found))
    return table


def expected_scores(
    logits: torch.Tensor, token_ids: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From next-token logits (rows x vocabulary): each row's probabilities of the scores 1..5 (softmax over
    the five, each score's logit the log-sum-exp of its tokens' logits), their expectation, in [1, 5], and the
    probability mass the judge put on the score tokens at all, before that renormalisation (a judge that
    mostly wants to write something else gives a mass near 0 and a renormalised score that is noise)."""
    logits = logits.float()
    per_score = torch.stack([torch.logsumexp(logits[:, ids], dim=-1) for ids in token_ids], dim=-1)
    probs = per_score.softmax(dim=-1)
    mass = (torch.logsumexp(per_score, dim=-1) - torch.logsumexp(logits, dim=-1)).exp()
    return probs @ torch.tensor(SCORES, dtype=probs.dtype, device=probs.device), probs, mass


def parse_score(reply: str) -> int | None:
    """mode=parsed: the first integer of the reply when it is 1-5 (ALOE's original reads ``int(reply)``)."""
    found = re.search(r"\d+", reply)
    return int(found.group()) if found and int(found.group()) in SCORES else None


@dataclass(frozen=True)
class Verdict:
    score: float | None  # None: mode=parsed and no score in the reply
    probs: list[float] | None = None  # mode=expected: p("1").."5"
    reply: str | None = None  # mode=parsed: the judge's text
    mass: float | None = None  # mode=expected: the probability on the score tokens, before renormalising


class Judge:
    """A causal LM that scores prompts 1-5 in batches (by length, left-padded)."""

    def __init__(
        self, model, tokenizer, device, mode="expected", batch_size=8, max_length=2048, max_new_tokens=8
    ):
        if mode not in MODES:
            raise PercontrastError(f"judge.mode={mode!r} is not one of: {', '.join(MODES)}")
        self.model, self.tokenizer, self.device, self.mode = model, tokenizer, device, mode
        self.batch_size, self.max_length, self.max_new_tokens = batch_size, max_length, max_new_tokens
        self.token_ids = score_token_ids(tokenizer) if mode == "expected" else None

    @classmethod
    def load(cls, named: NamedModel, judge_cfg, device) -> Judge:
        model, tokenizer = named.load(resolve_dtype("auto", device), device)
        return cls.configured(model, tokenizer, judge_cfg, device)

    @classmethod
    def configured(cls, model, tokenizer, judge_cfg, device) -> Judge:
        return cls(
            model,
            tokenizer,
            device,
            judge_cfg.mode,
            judge_cfg.batch_size,
            judge_cfg.max_length,
            judge_cfg.max_new_tokens,
        )

    def score(self, prompts: list[str], description: str = "judge") -> list[Verdict]:
        """One verdict per prompt (each sent as the user turn of a fresh chat), in prompt order."""
        if self.mode == "parsed":
            decoding = Decoding(self.max_new_tokens, 0.0, 1.0, self.batch_size, self.max_length)
            chats = [[{"role": "user", "content": p}] for p in prompts]
            replies, _ = generate_replies(
                self.model, self.tokenizer, chats, decoding, self.device, description
            )
            return [Verdict(parse_score(r), reply=r) for r in replies]
        return self.expected(prompts, description)

    @torch.no_grad()
    def expected(self, prompts: list[str], description: str) -> list[Verdict]:
        self.model.eval()
        rendered = [render_chat(self.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
        encoded = [prompt_ids(self.tokenizer, text, self.max_length) for text in rendered]
        if cut := sum(c for _, c in encoded):
            say(f"[yellow]warning[/yellow]: {cut} judge prompts cut to judge.max_length={self.max_length}")
        ids = [i for i, _ in encoded]
        verdicts: list[Verdict | None] = [None] * len(ids)
        batches = length_batches([len(i) for i in ids], self.batch_size)
        for positions in track(batches, total=len(batches), description=description):
            input_ids = pad_left([ids[i] for i in positions], self.tokenizer.pad_token_id).to(self.device)
            mask = pad_left([[1] * len(ids[i]) for i in positions], 0).to(self.device)
            logits = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),  # left padding: count from the first token
                logits_to_keep=1,
            ).logits[:, -1]
            expected, probs, mass = expected_scores(logits, self.token_ids)
            for position, value, row, on_scores in zip(
                positions, expected.tolist(), probs.tolist(), mass.tolist(), strict=True
            ):
                verdicts[position] = Verdict(value, probs=row, mass=on_scores)
        return verdicts


def judge_agreement(judge_scores: list, recalls: list) -> float | None:
    """Spearman's rank correlation between judge scores and persona recall over the examples that have both
    (ties share ranks); None when undefined: fewer than 3 pairs, or either side constant."""
    from scipy.stats import spearmanr  # scipy comes with scikit-learn

    pairs = [(s, r) for s, r in zip(judge_scores, recalls, strict=True) if s is not None and r is not None]
    if len(pairs) < 3:
        return None
    scores, truth = np.array(pairs, dtype=float).T
    if np.ptp(scores) == 0 or np.ptp(truth) == 0:
        return None
    return float(spearmanr(scores, truth).statistic)


def persona_recall(row: dict) -> float | None:
    """An eval row's persona recall: the share of the persona fields its reference writes that the generation
    writes with the user's value (None when the reference writes none)."""
    present = row["persona_present"]
    return len(row["persona_recalled"]) / len(present) if present else None


def personalization_prompt(judge_cfg, example: Example, response: str, retriever: Retriever) -> str:
    """conf/judge/default.yaml's prompt for one test example: the user's profile items most relevant to the
    request (judge.profile_items, each cut to judge.item_chars characters), the request and the response."""
    items = select_profile(example, judge_cfg.profile_items, retriever)
    profile = "\n".join(f"- {item[: judge_cfg.item_chars]}" for item in items)
    # a thinking model's reasoning is not part of its answer: the judge reads the answer alone
    return judge_cfg.prompt.format(profile=profile, request=example.input, response=strip_reasoning(response))


def judge_weights(cfg, store: ArtifactStore) -> str | None:
    """The judge's weights fingerprint (None without a judge): what an eval's id records of it (with the
    judge settings, identity.eval_identity)."""
    if not enabled(cfg.eval.judge):
        return None
    return resolve_named(cfg.eval.judge, "eval.judge", store, cfg.paths.cache).identity


def judge_eval(
    cfg, store: ArtifactStore, device, examples: list[Example], predictions: list[str], rows
) -> dict:
    """eval.judge=<model>: score every generation, add ``judge_score`` (and its score-token mass) to its
    per-example row, and return the metrics: the mean judge score, the score-token mass (mean, share under
    0.5), and on persona tasks the judge's agreement with persona recall and its swap accuracy
    (evaluation/judge_checks.py)."""
    if not enabled(cfg.eval.judge):
        return {}
    named = resolve_named(cfg.eval.judge, "eval.judge", store, cfg.paths.cache)
    judge = Judge.load(named, cfg.judge, device)
    retriever = Retriever("bm25", "words")
    prompts = [
        personalization_prompt(cfg.judge, e, p, retriever) for e, p in zip(examples, predictions, strict=True)
    ]
    verdicts = judge.score(prompts, description=f"judge ({named.spec})")
    for row, verdict in zip(rows, verdicts, strict=True):
        row["judge_score"] = verdict.score
        if verdict.mass is not None:
            row["judge_score_mass"] = verdict.mass
    scores = [v.score for v in verdicts]
    valid = [s for s in scores if s is not None]
    metrics = {"judge_score": float(np.mean(valid)) if valid else float("nan")}
    metrics.update(mass_metrics([v.mass for v in verdicts]))
    if judge.mode == "parsed":
        metrics["judge_parse_failures"] = float(len(scores) - len(valid))
    metrics.update(
        swap_accuracy(
            examples,
            lambda example, response: personalization_prompt(cfg.judge, example, response, retriever),
            lambda texts: [v.score for v in judge.score(texts, description="judge: swap check")],
        )
    )
    if rows and all("persona_present" in row for row in rows):  # a persona task: ground truth is known
        agreement = judge_agreement(scores, [persona_recall(row) for row in rows])
        if agreement is None:
            say("judge agreement with persona recall: undefined (constant scores or recall, or < 3 examples)")
        else:
            metrics["judge_agreement"] = agreement
    return metrics


def check_judge_config(judge_cfg) -> None:
    """One-line errors for bad judge settings, before any work."""
    if judge_cfg.mode not in MODES:
        raise PercontrastError(f"judge.mode={judge_cfg.mode!r} is not one of: {', '.join(MODES)}")
    for key in ("batch_size", "max_length", "max_new_tokens", "profile_items", "item_chars"):
        value = judge_cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PercontrastError(f"judge.{key}={value!r} must be an integer >= 1")
    try:
        judge_cfg.prompt.format(profile="", request="", response="")
    except (KeyError, IndexError, ValueError) as exc:
        raise PercontrastError(
            f"judge.prompt: bad placeholder ({exc}); use {{profile}}, {{request}} and {{response}} "
            "(literal braces doubled: {{{{ }}}})"
        ) from exc
