"""Chat turns for the side roles (LLM judge, ALOE's user simulator, the model under test in a dialogue):
rendering a message list as the model's prompt, and batched reply generation.

A model with a chat template gets its template (what ALOE's published evaluation does), with thinking off
(``enable_thinking=False`` where the template takes it: Qwen3), and any reasoning a reply still holds is
stripped before it is judged or passed on; a model without one (the tiny test model) gets a plain
``User: / Assistant:`` transcript, so every role runs with any model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from percontrast_cli.data.encode import chat_text, end_of_turn_id, length_batches, pad_left
from percontrast_cli.evaluation.generate import count_generated, decoding_config
from percontrast_cli.runtime.progress import track

TRANSCRIPT_ROLES = {"user": "User", "assistant": "Assistant", "system": "System"}


def render_chat(tokenizer, messages: list[dict]) -> str:
    """The prompt that asks the model for the next assistant turn after ``messages`` (thinking off)."""
    if tokenizer.chat_template:
        return chat_text(tokenizer, messages, add_generation_prompt=True)
    lines = [f"{TRANSCRIPT_ROLES[m['role']]}: {m['content']}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


def context_budget(model, max_new_tokens: int, max_length: int | None) -> int:
    """Prompt tokens kept: ``max_length`` when given, else what the model's position range leaves after the
    reply (ALOE's evaluation truncates at max_position_embeddings)."""
    if max_length is not None:
        return max_length
    positions = getattr(model.config, "max_position_embeddings", None) or 4096
    return max(positions - max_new_tokens, 16)


def prompt_ids(tokenizer, text: str, budget: int) -> tuple[list[int], bool]:
    """Token ids of a rendered prompt, cut from the left to ``budget`` (the newest turns stay, as ALOE's
    ``truncation_side='left'``); also whether it was cut."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # A tokenizer whose template does not write the BOS token itself (Llama-style) gets it here.
    bos = tokenizer.bos_token_id
    if bos is not None and tokenizer.chat_template and tokenizer.bos_token not in text:
        ids = [bos, *ids]
    return ids[-budget:], len(ids) > budget


REASONING = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)


def strip_reasoning(text: str) -> str:
    """A reply without a thinking model's reasoning (`<think>...</think>`, or an unclosed one to the end):
    what is judged or passed on is the answer alone."""
    return REASONING.sub("", text).strip() if "<think>" in text else text


@dataclass(frozen=True)
class Decoding:
    """How one role writes: ``temperature`` 0 is greedy decoding (deterministic)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 8
    max_length: int | None = None  # prompt tokens kept (from the end); None: the model's position range


@torch.no_grad()
def generate_replies(
    model, tokenizer, conversations: list[list[dict]], decoding: Decoding, device, description: str
) -> tuple[list[str], int]:
    """The next assistant turn of every conversation, batched by prompt length (left-padded), stopping at the
    model's end-of-turn token; replies in conversation order, and how many prompts had to be cut."""
    model.eval()
    stop_ids = sorted({end_of_turn_id(tokenizer, chat=True), tokenizer.eos_token_id} - {None})
    config = decoding_config(
        decoding.max_new_tokens, tokenizer.pad_token_id, stop_ids, decoding.temperature, decoding.top_p
    )
    budget = context_budget(model, decoding.max_new_tokens, decoding.max_length)
    encoded = [prompt_ids(tokenizer, render_chat(tokenizer, c), budget) for c in conversations]
    prompts = [ids for ids, _ in encoded]
    replies: list[str] = [""] * len(prompts)
    saved, model.generation_config = model.generation_config, config  # no checkpoint default leaks in
    try:
        batches = length_batches([len(p) for p in prompts], decoding.batch_size)
        for positions in track(batches, total=len(batches), description=description):
            rows = [prompts[i] for i in positions]
            input_ids = pad_left(rows, tokenizer.pad_token_id).to(device)
            attention_mask = pad_left([[1] * len(r) for r in rows], 0).to(device)
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
            new_tokens = out[:, input_ids.shape[1] :]
            counts = count_generated(new_tokens, stop_ids).tolist()
            for position, row, count in zip(positions, new_tokens, counts, strict=True):
                text = tokenizer.decode(row[:count], skip_special_tokens=True)
                replies[position] = strip_reasoning(text).strip()
    finally:
        model.generation_config = saved
    return replies, sum(cut for _, cut in encoded)
