"""Bounded inputs: no single text of a data file can stall a run. A 10 MB profile item without whitespace
used to hang the tiny model's tokenizer training for many minutes (BPE training is quadratic in a word's
length, and Rust code does not answer Ctrl-C); a 300 KB one delayed Ctrl-C by about 85 s.

Every profile item, target and request is cut to `data.max_text_chars` characters (far above any prompt a
model takes: 32768 characters are ~8000 tokens), with one warning line per cut row naming it."""

from __future__ import annotations

import dataclasses

from percontrast_cli.data.schema import Example
from percontrast_cli.runtime.progress import warn

NAMED_ROWS = 5  # rows named one per line; the rest are counted


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


def cap_example(example: Example, limit: int) -> tuple[Example, list[str]]:
    """The example with every text cut to `limit` characters, and what was cut ("profile[2]: 10000000")."""
    cut = [
        f"{name}: {len(text)}"
        for name, text in (
            ("input", example.input),
            ("output", example.output),
            *((f"profile[{i}]", item) for i, item in enumerate(example.profile)),
            *((f"profile[{i}] (retrieval text)", t) for i, t in enumerate(example.retrieval_texts or ())),
        )
        if len(text) > limit
    ]
    if not cut:
        return example, []
    spans = example.personal_spans
    if spans is not None:  # personal spans of the cut target end where it ends
        spans = tuple((start, min(end, limit)) for start, end in spans if start < limit)
    texts = example.retrieval_texts
    capped = dataclasses.replace(
        example,
        input=_cut(example.input, limit),
        output=_cut(example.output, limit),
        profile=tuple(_cut(item, limit) for item in example.profile),
        retrieval_texts=None if texts is None else tuple(_cut(t, limit) for t in texts),
        personal_spans=spans,
    )
    return capped, cut


def cap_texts(examples: list[Example], limit: int | None, split: str) -> list[Example]:
    """A split's examples with every text cut to `limit` characters (None: no cap), each cut row named."""
    if limit is None:
        return examples
    out, cut_rows = [], 0
    for example in examples:
        capped, cut = cap_example(example, limit)
        out.append(capped)
        if cut:
            cut_rows += 1
            if cut_rows <= NAMED_ROWS:
                warn(
                    f"{split} example {example.id!r} (user {example.user_id!r}): {', '.join(cut)} characters "
                    f"cut to data.max_text_chars={limit}",
                    "shorten that row, or raise data.max_text_chars",
                )
    if cut_rows > NAMED_ROWS:
        warn(f"{split}: {cut_rows - NAMED_ROWS} more rows cut to data.max_text_chars={limit}")
    return out
