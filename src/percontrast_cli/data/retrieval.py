"""Profile retrieval: which k profile items a prompt shows, most relevant first.

- ``bm25``: rank-bm25's BM25Okapi. ``tokens=whitespace`` is LongLaMP's official setting (split on spaces,
  case kept); ``tokens=words`` lowercases and keeps word characters (this project's synthetic tasks).
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

from percontrast_cli.errors import PercontrastError

METHODS = ("bm25", "recency", "random", "contriever")
BM25_TOKENS = ("whitespace", "words")


def tokens(text: str, how: str) -> list[str]:
    return text.split() if how == "whitespace" else re.findall(r"\w+", text.lower())


@lru_cache(maxsize=65536)
def bm25_order(query: str, documents: tuple[str, ...], how: str) -> tuple[int, ...]:
    """Indices of `documents`, highest BM25 score first (ties keep the profile's order)."""
    corpus = [tokens(d, how) for d in documents]
    if not any(corpus):
        return tuple(range(len(documents)))
    scores = BM25Okapi(corpus).get_scores(tokens(query, how))
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

    @classmethod
    def from_config(cls, retrieval_cfg) -> Retriever:
        return cls(retrieval_cfg.method, retrieval_cfg.bm25_tokens, retrieval_cfg.get("model"))

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


def top_k(query: str, documents: tuple[str, ...], k: int) -> tuple[str, ...]:
    """BM25 top-k over lowercased word tokens (the synthetic tasks' setting): the items themselves."""
    return tuple(documents[i] for i in Retriever().top_k(query, documents, k))
