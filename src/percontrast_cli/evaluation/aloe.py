"""ALOE's multi-turn personalized-dialogue evaluation (Wu et al. 2024; the paper's cross-scenario test), as
its published ``evaluation/eval_own.py`` runs it, with local models in every role.

For every simulated user (a profile x personality pair) a *simulator* model role-plays the user (ALOE's
published role-play prompt) for ``aloe.rounds`` rounds with the model under test; after each of the
model's replies a *judge* scores, 1-5, how well the reply is tailored to the user (ALOE's published rubric).
AL(k) is the mean score at round k over all users. Each round is three batched steps over all conversations
at once (simulator, model, judge), so a GPU run of the full 100 x 10 protocol takes minutes.

Differences from the original, on purpose: the judge's score is the expected value over "1".."5" from its
next-token probabilities (``judge.mode=expected``; the original's integer reply is ``judge.mode=parsed``);
the model under test decodes greedily by default (``aloe.temperature``); prompts are cut from the start at
``aloe.max_length`` (default: the model's position range), as the original truncates the model's prompt.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np

from percontrast_cli.data.aloe import Persona
from percontrast_cli.evaluation.chat import Decoding, generate_replies
from percontrast_cli.evaluation.judge import Judge, enabled
from percontrast_cli.evaluation.judge_checks import mass_metrics
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.runtime.progress import say

CONVERSATIONS = "conversations.jsonl"  # the full dialogues, every turn with its score
SCORES = "scores.jsonl"  # per conversation: its user (profile) and the score of every round
# Judge settings that cannot change an ALOE score (they shape eval.judge's persona prompt).
PERSONA_JUDGE_ONLY = ("prompt", "profile_items", "item_chars")


def clean_simulator_text(text: str) -> str:
    """As the original's remove_asterisk_text: text between asterisks (stage directions such as *smiles*)
    removed, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"\*.*?\*", "", text)).strip()


@dataclass
class Speaker:
    """A model in a dialogue role, with how it writes."""

    model: object
    tokenizer: object
    decoding: Decoding


@dataclass
class Conversation:
    persona: Persona
    simulator_chat: list[dict]  # the simulator's view: role-play prompt, its own turns as the assistant
    model_chat: list[dict] = field(default_factory=list)  # the model under test's view
    turns: list[dict] = field(default_factory=list)  # per round: messages, score and the judge's detail

    def record(self) -> dict:
        return {
            "id": self.persona.id,
            "profile_index": self.persona.profile_index,
            "personality_index": self.persona.personality_index,
            "profile": self.persona.profile.text,
            "personality": self.persona.personality.text,
            "turns": self.turns,
        }

    def scores(self) -> dict:
        return {
            "id": self.persona.id,
            "user": self.persona.profile_index,
            "personality_index": self.persona.personality_index,
            "scores": [turn["score"] for turn in self.turns],
        }


def start_conversations(personas: list[Persona], role_play_prompt: str, raw: bool) -> list[Conversation]:
    """Each conversation opens with ALOE's role-play prompt as the simulator's first user turn."""
    return [
        Conversation(p, [{"role": "user", "content": role_play_prompt.format(*p.texts(raw))}])
        for p in personas
    ]


def play_round(
    conversations: list[Conversation],
    number: int,
    rounds: int,
    model: Speaker,
    simulator: Speaker,
    judge: Judge,
    evaluate_prompt: str,
    raw: bool,
    device,
) -> None:
    """One round for every conversation at once: the simulator speaks (cleaned of asterisk text), the model
    under test replies, the judge scores the reply; both views of each conversation grow by one exchange."""
    where = f"aloe round {number}/{rounds}"
    said, _ = generate_replies(
        simulator.model,
        simulator.tokenizer,
        [c.simulator_chat for c in conversations],
        simulator.decoding,
        device,
        f"{where}: simulator",
    )
    messages = [clean_simulator_text(text) for text in said]
    for conversation, message in zip(conversations, messages, strict=True):
        conversation.simulator_chat.append({"role": "assistant", "content": message})
        conversation.model_chat.append({"role": "user", "content": message})
    replies, cut = generate_replies(
        model.model,
        model.tokenizer,
        [c.model_chat for c in conversations],
        model.decoding,
        device,
        f"{where}: model",
    )
    if cut:
        say(f"[yellow]warning[/yellow]: {where}: {cut} model prompts cut from the start to fit")
    prompts = [
        evaluate_prompt.format(*c.persona.texts(raw), message, reply)
        for c, message, reply in zip(conversations, messages, replies, strict=True)
    ]
    verdicts = judge.score(prompts, description=f"{where}: judge")
    for conversation, raw_said, message, reply, verdict in zip(
        conversations, said, messages, replies, verdicts, strict=True
    ):
        turn = {"round": number, "user": message, "assistant": reply, "score": verdict.score}
        if raw_said != message:
            turn["user_raw"] = raw_said  # before the asterisk cleaning
        if verdict.probs is not None:
            turn["judge_probs"] = [round(p, 6) for p in verdict.probs]
            turn["judge_score_mass"] = round(verdict.mass, 6)
        if verdict.reply is not None:
            turn["judge_reply"] = verdict.reply
        conversation.turns.append(turn)
        conversation.model_chat.append({"role": "assistant", "content": reply})
        conversation.simulator_chat.append({"role": "user", "content": reply})


def run_dialogues(
    personas: list[Persona],
    model: Speaker,
    simulator: Speaker,
    judge: Judge,
    rounds: int,
    role_play_prompt: str,
    evaluate_prompt: str,
    raw: bool,
    device,
) -> list[Conversation]:
    conversations = start_conversations(personas, role_play_prompt, raw)
    started = time.monotonic()
    for number in range(1, rounds + 1):
        play_round(conversations, number, rounds, model, simulator, judge, evaluate_prompt, raw, device)
        value = al_values([c.scores()["scores"] for c in conversations])[-1]
        say(
            f"aloe round {number}/{rounds}: AL({number}) = {value:.3f} over {len(conversations)} "
            f"conversations ({time.monotonic() - started:.0f} s)"
        )
    return conversations


def al_values(scores: list[list[float | None]]) -> list[float]:
    """AL(k) for k = 1..rounds: the mean score of round k over the conversations (a parse failure, None,
    left out; NaN when a round has no score)."""
    table = np.array([[np.nan if s is None else s for s in row] for row in scores], dtype=float)
    with np.errstate(invalid="ignore"):
        counts = (~np.isnan(table)).sum(0)
        return [
            float(v) if c else float("nan")
            for v, c in zip(np.nansum(table, 0) / np.maximum(counts, 1), counts, strict=True)
        ]


def al_metrics(conversations: list[Conversation]) -> dict[str, float]:
    """aloe_AL1..aloe_AL<rounds>, their mean (aloe_AL_mean), the judge's score-token mass (mean, share of
    turns under 0.5: how sure it is) and, when the judge's reply is parsed, the number of turns without a
    score."""
    scores = [c.scores()["scores"] for c in conversations]
    values = al_values(scores)
    metrics = {f"aloe_AL{k}": v for k, v in enumerate(values, start=1)}
    metrics["aloe_AL_mean"] = float(np.mean(values))
    failures = sum(s is None for row in scores for s in row)
    if failures or any("judge_reply" in t for c in conversations for t in c.turns):
        metrics["aloe_judge_parse_failures"] = float(failures)
    masses = [t.get("judge_score_mass") for c in conversations for t in c.turns]
    metrics.update({f"aloe_{name}": value for name, value in mass_metrics(masses).items()})
    return metrics


def decoding(aloe_cfg, role: str, batch_size: int) -> Decoding:
    prefix = "" if role == "model" else f"{role}_"
    return Decoding(
        max_new_tokens=aloe_cfg[f"{prefix}max_new_tokens"],
        temperature=float(aloe_cfg[f"{prefix}temperature"]),
        top_p=float(aloe_cfg[f"{prefix}top_p"]),
        batch_size=batch_size,
        max_length=aloe_cfg.max_length,
    )


def check_aloe_config(cfg) -> None:
    """One-line errors for bad aloe.* settings, before any model loads."""
    aloe = cfg.aloe
    for role in ("simulator", "judge"):
        if not enabled(aloe[role]):
            raise PercontrastError(
                f"task=aloe needs a {role} model: aloe.{role}=<model option | artifact | directory | hub id> "
                "(defaults to eval.judge, e.g. eval.judge=smollm2)"
            )
    for key in ("rounds", "batch_size", "max_new_tokens", "simulator_max_new_tokens"):
        if not isinstance(aloe[key], int) or isinstance(aloe[key], bool) or aloe[key] < 1:
            raise PercontrastError(f"aloe.{key}={aloe[key]!r} must be an integer >= 1")
    for key in ("temperature", "simulator_temperature"):
        if not isinstance(aloe[key], int | float) or isinstance(aloe[key], bool) or aloe[key] < 0:
            raise PercontrastError(f"aloe.{key}={aloe[key]!r} must be a number >= 0 (0: greedy)")
    for key in ("top_p", "simulator_top_p"):
        if not isinstance(aloe[key], int | float) or isinstance(aloe[key], bool) or not 0 < aloe[key] <= 1:
            raise PercontrastError(f"aloe.{key}={aloe[key]!r} must be in (0, 1]")
    if aloe.max_length is not None and (not isinstance(aloe.max_length, int) or aloe.max_length < 16):
        raise PercontrastError(f"aloe.max_length={aloe.max_length!r} must be an integer >= 16 (or null)")
    try:
        aloe.role_play_prompt.format("", "")
        aloe.evaluate_prompt.format("", "", "", "")
    except (IndexError, KeyError, ValueError) as exc:
        raise PercontrastError(
            f"aloe prompts: bad placeholder ({exc}); they take positional {{}} fields"
        ) from exc
