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


def render_prompt(tokenizer, prompt: str, chat: bool) -> str:
    """The prompt as the user turn of the model's chat template (when asked and the model has one)."""
    if chat and tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prompt


def end_of_turn_id(tokenizer, chat: bool) -> int:
    """The token that closes the target: the chat template's end-of-turn token, else end-of-sequence.

    Found by rendering a short exchange, so it works for any template; it is a label even where the
    tokenizer pads with the same id (pad == eos), because labels come from lengths, not from pad ids."""
    if chat and tokenizer.chat_template:
        turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        text = tokenizer.apply_chat_template(turns, tokenize=False)
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


def join(
    tokenizer,
    request: str,
    profile: list[str] | None,
    target: EncodedTarget,
    max_length: int,
    chat: bool,
    fmt: PromptFormat = PLAIN,
) -> dict[str, list[int]]:
    """Prompt + target ids with labels on the target only.

    Truncation policy: the target is kept whole (only a target that alone exceeds the budget is capped, in
    encode_target). While prompt + target is too long, the least relevant profile item (the last one, as
    retrieval ranks them) is dropped and the prompt rebuilt; if the prompt is still too long with no profile
    items left, it loses tokens from its start, so the request at its end stays.
    """
    room = max(max_length - len(target.ids), 1)
    profile = None if profile is None else list(profile)
    whole = None  # the prompt's length with every profile item: what max_length would need to keep them all
    while True:
        prompt = render_prompt(tokenizer, build_prompt(request, profile, fmt), chat)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        whole = len(prompt_ids) if whole is None else whole
        if len(prompt_ids) <= room or not profile:
            break
        profile.pop()
    prompt_ids = prompt_ids[-room:]
    return {
        "input_ids": prompt_ids + target.ids,
        "labels": [IGNORE] * len(prompt_ids) + target.ids,
        # what was kept, for the checks of a whole encoded set (diagnostics.check_encoding)
        "profile_items": 0 if profile is None else len(profile),
        "needed": whole + max(target.needed, len(target.ids)),
    }


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
    profile = factual_profile(example, k, retriever)
    item = join(tokenizer, example.input, profile, target, max_length, chat, fmt)
    item["personal"] = target.personal
    item[CUT] = target.cut
    item["profile_retrieved"] = 0 if profile is None else len(profile)
    if counterfactual is not None:
        cf_profile = counterfactual_profile(example, k, counterfactual, pool, retriever)
        cf = join(tokenizer, example.input, cf_profile, target, max_length, chat, fmt)
        item["cf_input_ids"], item["cf_labels"] = cf["input_ids"], cf["labels"]
    return item


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
