"""Prompt building: the factual prompt (with the user's profile) and its counterfactuals.

The counterfactual is the causal intervention of PerContrast: the same request and target, with the profile
removed (``drop``, identical to the k=0 prompt), left as an empty slot (``empty``), or replaced by another
user's profile (``other_user``).
"""

from __future__ import annotations

import zlib

from percontrast_cli.data.retrieval import top_k
from percontrast_cli.data.schema import Example
from percontrast_cli.errors import PercontrastError

COUNTERFACTUALS = ("drop", "empty", "other_user")


def build_prompt(request: str, profile: list[str] | None) -> str:
    """``profile=None`` leaves the profile section out entirely; ``[]`` keeps an empty slot."""
    head = ""
    if profile is not None:
        head = "User profile:\n" + "".join(f"- {doc}\n" for doc in profile) + "\n"
    return f"{head}Request: {request}\nResponse:\n"


def select_profile(example: Example, k: int, request: str | None = None) -> list[str]:
    """The k profile items most relevant to the request (BM25), most relevant first."""
    return list(top_k(request or example.input, example.profile, k))


def factual_prompt(example: Example, k: int) -> str:
    return build_prompt(example.input, select_profile(example, k) if k > 0 else None)


def counterfactual_profile(example: Example, k: int, mode: str, others: list[Example]) -> list[str] | None:
    """The profile the counterfactual prompt shows: None (section removed), [] (empty slot) or another
    user's items retrieved for this request."""
    if mode == "drop":
        return None
    if mode == "empty":
        return []
    if mode == "other_user":
        return select_profile(other_user_example(example, others), k, request=example.input)
    raise PercontrastError(f"estimator.counterfactual={mode!r} is not one of {', '.join(COUNTERFACTUALS)}")


def counterfactual_prompt(example: Example, k: int, mode: str, others: list[Example]) -> str:
    return build_prompt(example.input, counterfactual_profile(example, k, mode, others))


def other_user_example(example: Example, pool: list[Example]) -> Example:
    """A deterministic pick of an example from a different user (same choice on every run): from a position
    hashed from the example id, the first example of another user (O(1) on average, even on large pools)."""
    if pool:
        start = zlib.crc32(example.id.encode()) % len(pool)
        for offset in range(len(pool)):
            candidate = pool[(start + offset) % len(pool)]
            if candidate.user_id != example.user_id:
                return candidate
    raise PercontrastError("estimator.counterfactual=other_user needs data from at least two users")
