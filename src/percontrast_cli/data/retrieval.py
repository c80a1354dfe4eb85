"""Profile retrieval: the top-k profile items by BM25 (rank-bm25) against the request, most relevant first."""

from __future__ import annotations

import re
from functools import lru_cache

from rank_bm25 import BM25Okapi


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rank(query: str, documents: tuple[str, ...]) -> list[int]:
    """Indices of `documents`, highest BM25 score first (ties keep the profile's order)."""
    corpus = [words(d) for d in documents]
    if not any(corpus):
        return list(range(len(documents)))
    scores = BM25Okapi(corpus).get_scores(words(query))
    return sorted(range(len(documents)), key=lambda i: -scores[i])


@lru_cache(maxsize=65536)
def top_k(query: str, documents: tuple[str, ...], k: int) -> tuple[str, ...]:
    if k <= 0:
        return ()
    return tuple(documents[i] for i in rank(query, documents)[:k])
