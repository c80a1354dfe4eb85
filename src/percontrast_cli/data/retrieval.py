"""Profile retrieval: which k profile items a prompt shows, most relevant first.

- ``bm25``: rank-bm25's BM25Okapi. ``tokens=whitespace`` is LongLaMP's official retrieval exactly: split on
  spaces, case kept, ranked by rank-bm25's own ``get_top_n`` as the official code calls it
  (``np.argsort(scores)[::-1]``: among equal scores the *later* profile item comes first; all-zero scores are
  common on abstracts, whose lowercased texts rarely match the cased query). ``tokens=words`` is this
  project's setting for its generated tasks: lowercased word characters, equal scores in profile order (kept
  so that those tasks' prompts, and the results measured on them, stay as they were).
- ``recency``: the newest k items, newest first (profiles are stored oldest first).
- ``random``: k items drawn with a seed fixed by the example, so every run shows the same ones.
- ``contriever``: a dense retriever (``facebook/contriever`` or a local copy): mean-pooled token embeddings,
  dot product; item embeddings cached by text.
"""

from __future__ import annotations

import random
import re
import zlib
from functools import lru_cache

import torch
from rank_bm25 import BM25Okapi

from percontrast_cli.runtime.errors import PercontrastError

METHODS = ("bm25", "recency", "random", "contriever")
BM25_TOKENS = ("whitespace", "words")


def tokens(text: str, how: str) -> list[str]:
    return text.split() if how == "whitespace" else re.findall(r"\w+", text.lower())


@lru_cache(maxsize=65536)
def bm25_order(query: str, documents: tuple[str, ...], how: str) -> tuple[int, ...]:
    """Indices of `documents`, highest BM25 score first; ties as the module docstring says."""
    official = how == "whitespace"
    corpus = [tokens(d, how) for d in documents]
    if not any(corpus):  # BM25Okapi cannot index a corpus without a word (all items would tie anyway)
        order = range(len(documents))
        return tuple(reversed(order)) if official else tuple(order)
    bm25 = BM25Okapi(corpus)
    if official:  # the library's ranking itself, over the items' positions
        positions = list(range(len(documents)))
        return tuple(bm25.get_top_n(tokens(query, how), positions, n=len(documents)))
    scores = bm25.get_scores(tokens(query, how))
    return tuple(sorted(range(len(documents)), key=lambda i: -scores[i]))


class Contriever:
    """Mean-pooled embeddings of a Contriever-style encoder (transformers AutoModel), dot-product ranking."""

    def __init__(self, name_or_path: str, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        from percontrast_cli.modeling.load import hub_reachable

        local_only = not hub_reachable()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_only)
            self.model = (
                AutoModel.from_pretrained(name_or_path, local_files_only=local_only).to(device).eval()
            )
        except OSError as exc:
            where = (
                "the hub is unreachable and it is not in the local Hugging Face cache" if local_only else exc
            )
            raise PercontrastError(
                f"retrieval.method=contriever: retriever model {name_or_path!r} could not be loaded "
                f"({where}); download facebook/contriever where the hub is reachable and pass "
                "retrieval.model=DIR, or use retrieval.method=bm25"
            ) from exc
        self.device = device
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        for start in range(0, len(missing), 32):
            chunk = missing[start : start + 32]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=512, return_tensors="pt")
            enc = enc.to(self.device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
            for text, vector in zip(chunk, pooled.cpu(), strict=True):
                self.cache[text] = vector
        return torch.stack([self.cache[t] for t in texts])

    def order(self, query: str, documents: tuple[str, ...]) -> tuple[int, ...]:
        scores = self.embed(list(documents)) @ self.embed([query])[0]
        return tuple(sorted(range(len(documents)), key=lambda i: -float(scores[i])))


class Retriever:
    """Ranks a profile's items against a query with the configured method (``retrieval.*``)."""

    def __init__(self, method: str = "bm25", bm25_tokens: str = "words", model: str | None = None):
        if method not in METHODS:
            raise PercontrastError(f"retrieval.method={method!r} is not one of: {', '.join(METHODS)}")
        self.method, self.bm25_tokens = method, bm25_tokens
        self.dense = Contriever(model) if method == "contriever" else None

    def order(self, query: str, documents: tuple[str, ...], seed_key: str = "") -> tuple[int, ...]:
        if self.method == "bm25":
            return bm25_order(query, documents, self.bm25_tokens)
        if self.method == "recency":
            return tuple(reversed(range(len(documents))))
        if self.method == "random":
            order = list(range(len(documents)))
            random.Random(zlib.crc32(f"{seed_key}|{query}".encode())).shuffle(order)
            return tuple(order)
        return self.dense.order(query, documents)

    def top_k(self, query: str, documents: tuple[str, ...], k: int, seed_key: str = "") -> list[int]:
        """Indices of the k items to show, most relevant first."""
        return list(self.order(query, documents, seed_key)[:k]) if k > 0 else []
