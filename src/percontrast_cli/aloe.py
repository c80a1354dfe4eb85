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

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from rich.table import Table

from percontrast_cli.artifacts import Artifact, ArtifactStore, load_artifact
from percontrast_cli.chat import Decoding, generate_replies
from percontrast_cli.data.aloe import Persona, load_personas, personas_fingerprint
from percontrast_cli.errors import PercontrastError
from percontrast_cli.evaluate import metrics_table
from percontrast_cli.judge import Judge, enabled
from percontrast_cli.modeling.load import resolve_dtype
from percontrast_cli.modeling.named import from_artifact, resolve_named
from percontrast_cli.progress import say

CONVERSATIONS = "conversations.jsonl"  # the full dialogues, every turn with its score
SCORES = "scores.jsonl"  # per conversation: its user (profile) and the score of every round
BOOTSTRAP_SAMPLES = 2000
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
    """aloe_AL1..aloe_AL<rounds>, their mean (aloe_AL_mean) and, when the judge's reply is parsed, the
    number of turns without a score."""
    scores = [c.scores()["scores"] for c in conversations]
    values = al_values(scores)
    metrics = {f"aloe_AL{k}": v for k, v in enumerate(values, start=1)}
    metrics["aloe_AL_mean"] = float(np.mean(values))
    failures = sum(s is None for row in scores for s in row)
    if failures or any("judge_reply" in t for c in conversations for t in c.turns):
        metrics["aloe_judge_parse_failures"] = float(failures)
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


def evaluate(ctx, checkpoint: Artifact) -> Artifact:
    """`percontrast eval task=aloe`: the dialogue evaluation of `checkpoint` as an `eval` artifact (metrics
    AL(k), the conversations and per-round scores), skipped when it exists."""
    cfg, store = ctx.cfg, ctx.store
    personas = load_personas(cfg.data.path, cfg.task.get("n_profiles"), cfg.task.n_personalities)
    simulator_named = resolve_named(cfg.aloe.simulator, "aloe.simulator", store, cfg.paths.cache)
    judge_named = resolve_named(cfg.aloe.judge, "aloe.judge", store, cfg.paths.cache)
    judge_settings = {
        k: v
        for k, v in OmegaConf.to_container(cfg.judge, resolve=True).items()
        if k not in PERSONA_JUDGE_ONLY
    }
    config = {
        "aloe": OmegaConf.to_container(cfg.aloe, resolve=True),
        "judge": judge_settings,
        "seed": cfg.seed,
    }
    inputs = {
        "checkpoint": checkpoint.id,
        "data": personas_fingerprint(personas),
        "simulator": simulator_named.identity,
        "judge": judge_named.identity,
    }
    artifact_id = store.artifact_id("eval", config, inputs)
    title = f"eval {artifact_id} (checkpoint {checkpoint.id}, task=aloe)"
    if (found := store.claim("eval", artifact_id)) is not None:
        say(f"[dim]skip[/dim] eval {found.id} exists ({found.path})")
        say(metrics_table(found.manifest["metrics"], title))
        return found
    say(
        f"aloe: {len(personas)} conversations x {cfg.aloe.rounds} rounds; simulator {simulator_named.spec}, "
        f"judge {judge_named.spec} ({cfg.judge.mode} score)"
    )
    loaded: dict[str, tuple] = {}  # one copy of a model that plays two roles

    def load(named, dtype):
        if named.identity not in loaded:
            loaded[named.identity] = named.load(dtype, ctx.device)
        return loaded[named.identity]

    under_test = from_artifact(checkpoint.id, checkpoint)
    model = Speaker(
        *load(under_test, resolve_dtype(cfg.model.dtype, ctx.device)),
        decoding(cfg.aloe, "model", cfg.aloe.batch_size),
    )
    auto = resolve_dtype("auto", ctx.device)
    simulator = Speaker(*load(simulator_named, auto), decoding(cfg.aloe, "simulator", cfg.aloe.batch_size))
    judge = Judge.configured(*load(judge_named, auto), cfg.judge, ctx.device)
    torch.manual_seed(cfg.seed)  # the sampling simulator (and a sampling model) draw the same on a rerun
    conversations = run_dialogues(
        personas,
        model,
        simulator,
        judge,
        cfg.aloe.rounds,
        cfg.aloe.role_play_prompt,
        cfg.aloe.evaluate_prompt,
        cfg.aloe.raw_lines,
        ctx.device,
    )
    metrics = al_metrics(conversations)
    # A checkpoint trained on another task evaluated here (the paper's cross-scenario test): both recorded.
    tasks = {"train": checkpoint.manifest.get("train_task"), "eval": cfg.task.name}
    run_config = OmegaConf.to_container(cfg, resolve=True)
    with store.create(
        "eval", artifact_id, config, inputs, metrics=metrics, run_config=run_config, tasks=tasks
    ) as (
        tmp,
        _,
    ):
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_jsonl(tmp / CONVERSATIONS, [c.record() for c in conversations])
        write_jsonl(tmp / SCORES, [c.scores() for c in conversations])
    ctx.tracker.summary({f"eval/{k}": v for k, v in metrics.items()})
    say(metrics_table(metrics, title))
    return store.find("eval", artifact_id)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


# --- report: AL(k) per group with user-level bootstrap intervals, and AL(k) against k -----------------------


def read_scores(artifact: Artifact) -> list[dict]:
    return [json.loads(line) for line in (artifact.path / SCORES).read_text().splitlines() if line.strip()]


def user_resamples(rows: list[dict], samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """AL(k) of the rows as they are (rounds) and of `samples` bootstrap resamples (samples x rounds) that
    draw users (ALOE profiles) with replacement: all conversations of a drawn profile, over its
    personalities and over the evals pooled here, go in together. Rounds: the fewest any row has."""
    rounds = min(len(r["scores"]) for r in rows)
    users = sorted({r["user"] for r in rows})
    sums, counts = np.zeros((len(users), rounds)), np.zeros((len(users), rounds))
    for row in rows:
        u = users.index(row["user"])
        for k, score in enumerate(row["scores"][:rounds]):
            if score is not None:
                sums[u, k] += score
                counts[u, k] += 1
    draws = np.random.default_rng(seed).integers(0, len(users), size=(samples, len(users)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums.sum(0) / counts.sum(0), sums[draws].sum(1) / counts[draws].sum(1), len(users)


def bootstrap_al(rows: list[dict], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """AL(k) for every round and their mean, each with a 95% percentile interval over user resamples."""
    point, resampled, users = user_resamples(rows, samples, seed)
    low, high = np.nanpercentile(resampled, [2.5, 97.5], axis=0)
    means = np.nanmean(resampled, axis=1)
    return {
        "al": point.tolist(),
        "low": low.tolist(),
        "high": high.tolist(),
        "mean": float(np.mean(point)),
        "mean_low": float(np.nanpercentile(means, 2.5)),
        "mean_high": float(np.nanpercentile(means, 97.5)),
        "users": users,
        "conversations": len(rows),
    }


def group_label(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items() if k not in ("task.name",)) or "all"


def report(store: ArtifactStore, summary: list[dict], out_dir: Path) -> Table | None:
    """`percontrast report` over evals that include task=aloe ones: a table of AL(k) per group (seeds pooled)
    with user-level bootstrap intervals (aloe_AL.md, aloe_AL.csv) and the plot aloe_AL_vs_k.png (a line per
    group: CE vs PerCE). None when no eval is an ALOE one."""
    groups = []
    for entry in summary:
        rows = []
        for member in entry["rows"]:
            artifact = load_artifact(store.root / "eval" / member["id"])
            if (artifact.path / SCORES).is_file():
                rows += read_scores(artifact)
        if rows:
            groups.append((group_label(entry["options"]), bootstrap_al(rows)))
    if not groups:
        return None
    rounds = min(len(found["al"]) for _, found in groups)
    header = ["group", "users", *(f"AL({k})" for k in range(1, rounds + 1)), "mean"]
    body = []
    for label, found in groups:
        cells = [
            f"{found['al'][k]:.3f} [{found['low'][k]:.3f}, {found['high'][k]:.3f}]" for k in range(rounds)
        ]
        mean = f"{found['mean']:.3f} [{found['mean_low']:.3f}, {found['mean_high']:.3f}]"
        body.append([label, str(found["users"]), *cells, mean])
    (out_dir / "aloe_AL.csv").write_text(
        "\n".join(",".join(f'"{c}"' for c in row) for row in [header, *body]) + "\n"
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    note = "\n95% intervals: percentile bootstrap over users (ALOE profiles), seeds pooled.\n"
    (out_dir / "aloe_AL.md").write_text("\n".join(lines) + "\n" + note)
    plot_al(groups, rounds, out_dir / "aloe_AL_vs_k.png")
    table = Table(title="ALOE: AL(k) [95% user-bootstrap interval]")
    for column in header:
        table.add_column(column)
    for row in body:
        table.add_row(*row)
    return table


def plot_al(groups: list[tuple[str, dict]], rounds: int, path: Path) -> None:
    """AL(k) against k, a line (with its interval as a band) per group: CE vs PerCE at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.arange(1, rounds + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for index, (label, found) in enumerate(groups):
        color = f"C{index}"
        ax.plot(ks, found["al"][:rounds], marker="o", color=color, label=label)
        ax.fill_between(ks, found["low"][:rounds], found["high"][:rounds], color=color, alpha=0.2)
    ax.set_xlabel("round k")
    ax.set_ylabel("AL(k): mean judge score (1-5)")
    ax.set_xticks(ks)
    ax.set_title("ALOE alignment per round\n(95% bootstrap interval over users)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
