"""Prompt building: the factual prompt (with the user's profile) and its counterfactuals.

`build_prompt` is the one place a prompt's text is made; `data.encode` calls it (after retrieval, dropping
items to fit the length budget) and puts its result in the chat template. Two styles (``prompt.style``):

- ``longlamp``, LongLaMP's official construction (byte for byte, docs/longlamp.md): each retrieved item as
  the task's sentence template (``task.longlamp_item``), the sentences joined with ``", and "``, then the
  task's connector (``task.longlamp_connector``) and the row's ``input``; with no profile (k = 0) the bare
  ``input``, as the official code gives without ``--use_profile``;
- ``plain``, this project's layout: ``User profile:`` with one ``- item`` line each, then ``Request: <input>``
  and ``Response:``.

The counterfactual is the causal intervention of PerContrast: the same request and target, with the profile
removed (``drop``: the prompt built with no profile, identical to the k = 0 prompt), left as an empty slot
(``empty``: the plain style's empty ``User profile:`` section; in the longlamp style the official prompt with
zero items, i.e. the connector and the input), or replaced by another user's items retrieved for this request
(``other_user``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from percontrast_cli.data.retrieval import Retriever
from percontrast_cli.data.schema import Example
from percontrast_cli.runtime.errors import PercontrastError

COUNTERFACTUALS = ("drop", "empty", "other_user")
STYLES = ("longlamp", "plain")


@dataclass(frozen=True)
class PromptFormat:
    style: str = "plain"
    connector: str = ""  # longlamp style: the text between the joined items and the input

    @classmethod
    def from_config(cls, cfg) -> PromptFormat:
        return cls(cfg.prompt.style, cfg.task.get("longlamp_connector") or "")


PLAIN = PromptFormat()


def build_prompt(request: str, profile: list[str] | None, fmt: PromptFormat = PLAIN) -> str:
    """``profile=None`` leaves the profile out entirely; ``[]`` keeps an empty slot (the plain style's empty
    section; the longlamp style's connector with no items before it)."""
    if fmt.style == "longlamp":
        if profile is None:
            return request
        return ", and ".join(profile) + fmt.connector + request
    head = ""
    if profile is not None:
        head = "User profile:\n" + "".join(f"- {doc}\n" for doc in profile) + "\n"
    return f"{head}Request: {request}\nResponse:\n"


def select_profile(
    example: Example, k: int, retriever: Retriever | None = None, request: Example | None = None
) -> list[str]:
    """The k items of `example`'s profile most relevant to `request`'s query (default: its own), most
    relevant first."""
    request = request or example
    order = (retriever or Retriever()).top_k(request.query, example.corpus, k, seed_key=request.id)
    return [example.profile[i] for i in order]


def factual_profile(example: Example, k: int, retriever: Retriever | None = None) -> list[str] | None:
    return select_profile(example, k, retriever) if k > 0 else None


def counterfactual_profile(
    example: Example, k: int, mode: str, others: list[Example], retriever: Retriever | None = None
) -> list[str] | None:
    """The profile the counterfactual prompt shows: None (removed), [] (empty slot) or another user's items
    retrieved for this request."""
    if mode == "drop":
        return None
    if mode == "empty":
        return []
    if mode == "other_user":
        return select_profile(other_user_example(example, others), k, retriever, request=example)
    raise PercontrastError(f"estimator.counterfactual={mode!r} is not one of {', '.join(COUNTERFACTUALS)}")


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
