"""Tokenization of (prompt, target) pairs and batch collation.

Prompt and target are tokenized separately and concatenated, so the target's token ids are the same under
the factual and the counterfactual prompt: PerContrast compares the same tokens under two contexts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from percontrast_cli.data.prompts import (
    PLAIN,
    PromptFormat,
    build_prompt,
    counterfactual_profile,
    factual_profile,
)
from percontrast_cli.data.retrieval import Retriever
from percontrast_cli.data.schema import Example

IGNORE = -100
MIN_PROMPT_TOKENS = 16  # a target longer than max_length minus this is cut at its end (and warned about)
CUT = "cut"  # item key: the target was cut to fit (it then has no end token: the text did not end there)


@dataclass
class EncodedTarget:
    ids: list[int]
    personal: list[bool]  # per target token: overlaps a ground-truth personal span (False when unknown)
    texts: list[str]  # per target token: its characters in the output (the end-of-sequence token's name last)
    cut: bool = False  # the output was longer than the budget and lost its end (no end token then)
    needed: int = 0  # tokens the whole target takes, its end token included (more than len(ids) when cut)


def chat_text(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    """The model's chat template over `messages`, with thinking off: a template that takes `enable_thinking`
    (Qwen3, the paper's model) then opens the reply with an empty reasoning block and answers directly, as a
    judge, a simulator and a model under test must; other templates ignore the variable."""
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=False, enable_thinking=False
    )


def render_prompt(tokenizer, prompt: str, chat: bool) -> str:
    """The prompt as the user turn of the model's chat template (when asked and the model has one)."""
    if chat and tokenizer.chat_template:
        return chat_text(tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True)
    return prompt


def end_of_turn_id(tokenizer, chat: bool) -> int:
    """The token that closes the target: the chat template's end-of-turn token, else end-of-sequence.

    Found by rendering a short exchange, so it works for any template; it is a label even where the
    tokenizer pads with the same id (pad == eos), because labels come from lengths, not from pad ids."""
    if chat and tokenizer.chat_template:
        turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        text = chat_text(tokenizer, turns, add_generation_prompt=False)
        suffix = text[text.rindex("b") + 1 :]
        ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
        if ids:
            return ids[0]
    return tokenizer.eos_token_id


def encode_target(tokenizer, example: Example, max_tokens: int, chat: bool = False) -> EncodedTarget:
    enc = tokenizer(example.output, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    spans = example.personal_spans or ()
    personal = [any(a < end and b > start for start, end in spans) for a, b in offsets]
    texts = [example.output[a:b] for a, b in offsets]
    end = end_of_turn_id(tokenizer, chat)
    if len(ids) + 1 > max_tokens:
        # Cut: no end token, or the model would learn to stop mid-text.
        return EncodedTarget(ids[:max_tokens], personal[:max_tokens], texts[:max_tokens], True, len(ids) + 1)
    texts.append(tokenizer.decode([end]))
    return EncodedTarget(ids + [end], personal + [False], texts, needed=len(ids) + 1)


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt as the model gets it."""

    text: str  # the user turn: build_prompt's text with the items that fit (before the chat template)
    ids: list[int]  # what the model reads: `text` in the chat template, cut from its start if still too long
    cut_tokens: int = 0  # prompt tokens cut from the start (only when the prompt with no items does not fit)
    items: int = 0  # profile items in it (fewer than given when some did not fit)
    whole: int = 0  # tokens of the prompt with every given item: the room it would need to keep them all


def fit_prompt(
    tokenizer,
    request: str,
    profile: list[str] | None,
    room: int,
    chat: bool,
    fmt: PromptFormat = PLAIN,
) -> FittedPrompt:
    """The prompt in at most `room` tokens: while it is too long, the least relevant profile item (the last
    one, as retrieval ranks them) is dropped and the prompt rebuilt; a profile cut away entirely leaves the
    no-profile prompt (as k = 0 would). If that is still too long, it loses tokens from its start, so the
    request at its end stays."""
    items = None if profile is None else list(profile)
    whole = None
    while True:
        text = build_prompt(request, items, fmt)
        ids = tokenizer(render_prompt(tokenizer, text, chat), add_special_tokens=False)["input_ids"]
        whole = len(ids) if whole is None else whole
        if len(ids) <= room or not items:
            break
        items.pop()
        if not items:
            items = None
    return FittedPrompt(text, ids[-room:], max(len(ids) - room, 0), len(items or ()), whole)


def prompt_room(target: EncodedTarget, max_length: int) -> int:
    """The prompt's budget: the target is kept whole (only a target that alone exceeds the budget is capped,
    in encode_target)."""
    return max(max_length - len(target.ids), 1)


def join(prompt: FittedPrompt, target: EncodedTarget) -> dict[str, list[int]]:
    """Prompt + target ids with labels on the target only."""
    return {"input_ids": prompt.ids + target.ids, "labels": [IGNORE] * len(prompt.ids) + target.ids}


def encode_example(
    tokenizer,
    example: Example,
    *,
    k: int,
    max_length: int,
    counterfactual: str | None,
    pool: list[Example],
    chat: bool = False,
    fmt: PromptFormat = PLAIN,
    retriever: Retriever | None = None,
) -> dict:
    """One training/scoring item: the factual sequence and, if asked, the counterfactual one."""
    target = encode_target(tokenizer, example, max_length - MIN_PROMPT_TOKENS, chat)
    room = prompt_room(target, max_length)
    profile = factual_profile(example, k, retriever)
    factual = fit_prompt(tokenizer, example.input, profile, room, chat, fmt)
    item = join(factual, target)
    item["personal"] = target.personal
    item[CUT] = target.cut
    # what was lost to max_length, for the checks of a whole encoded set (diagnostics.check_encoding)
    item["profile_retrieved"], item["profile_items"] = len(profile or ()), factual.items
    item["needed"] = factual.whole + max(target.needed, len(target.ids))
    if counterfactual is not None:
        cf_profile = counterfactual_profile(example, k, counterfactual, pool, retriever)
        cf = join(fit_prompt(tokenizer, example.input, cf_profile, room, chat, fmt), target)
        item["cf_input_ids"], item["cf_labels"] = cf["input_ids"], cf["labels"]
    return item


def shown_prompt(
    tokenizer,
    example: Example,
    *,
    k: int,
    max_length: int,
    chat: bool = False,
    fmt: PromptFormat = PLAIN,
    retriever: Retriever | None = None,
) -> FittedPrompt:
    """The factual prompt `encode_example` gives the model for `example` (the same steps: its `ids` are the
    item's prompt ids), for people to read (`percontrast inspect inspect.show=prompt`)."""
    target = encode_target(tokenizer, example, max_length - MIN_PROMPT_TOKENS, chat)
    profile = factual_profile(example, k, retriever)
    return fit_prompt(tokenizer, example.input, profile, prompt_room(target, max_length), chat, fmt)


def pad_left(rows: list[list], value) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([[value] * (width - len(r)) + list(r) for r in rows])


def target_count(item: dict) -> int:
    return sum(1 for x in item["labels"] if x != IGNORE)


class Collator:
    """Left-padded batches: each row's target ends at the last position, so the loss needs logits only at the
    last ``keep`` positions (the longest target + 1, an int in the batch; see modeling.forward). Label-aligned
    values (``personal``) are given for those positions; ``target_positions`` are the targets' flat indices
    in that (batch, keep) tail, row by row, so per-token values can be placed there without a host sync.
    Optional: counterfactual sequences (``cf_*``, same targets, same tail layout) and example indices."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict:
        counts = [target_count(i) for i in items]
        keep = max(counts) + 1
        batch = {"keep": keep, **self.sequences(items, "")}
        personal = [[False] * (keep - c) + list(i["personal"]) for i, c in zip(items, counts, strict=True)]
        batch["personal"] = torch.tensor(personal, dtype=torch.bool)
        batch["target_positions"] = torch.tensor(
            [row * keep + keep - count + j for row, count in enumerate(counts) for j in range(count)],
            dtype=torch.long,
        )
        if "cf_input_ids" in items[0]:
            batch.update(self.sequences(items, "cf_"))
        if "index" in items[0]:  # the examples' positions in the training set: keys of per-token score tables
            batch["index"] = [
                i["index"] for i in items
            ]  # a host list: never moved to (or read back from) a GPU
        return batch

    def sequences(self, items: list[dict], prefix: str) -> dict[str, torch.Tensor]:
        ids = [i[f"{prefix}input_ids"] for i in items]
        mask = pad_left([[1] * len(r) for r in ids], 0)
        return {
            f"{prefix}input_ids": pad_left(ids, self.pad_id),
            f"{prefix}labels": pad_left([i[f"{prefix}labels"] for i in items], IGNORE),
            f"{prefix}attention_mask": mask,
            # left padding: positions count from each row's first real token
            f"{prefix}position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
        }


def at_targets(flat: torch.Tensor, batch: dict) -> torch.Tensor:
    """Per-target-token values (flattened row by row) placed on the batch's (rows, keep) tail; 0 elsewhere."""
    rows = batch["input_ids"].shape[0]
    out = torch.zeros(rows * batch["keep"], dtype=flat.dtype, device=flat.device)
    return out.index_copy(0, batch["target_positions"].to(flat.device), flat).view(rows, batch["keep"])


def flat_targets(values: torch.Tensor, batch: dict) -> torch.Tensor:
    """The inverse of at_targets: the tail values at the target positions, row by row."""
    return values.reshape(-1).index_select(0, batch["target_positions"].to(values.device))


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Positions grouped into batches of similar length, longest first: they pad less (callers put the
    results back in position order)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
