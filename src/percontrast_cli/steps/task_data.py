"""The task's examples and their encoding: the one encoding every stage starts from."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from percontrast_cli.data import personas, synthetic
from percontrast_cli.data.bounds import cap_texts
from percontrast_cli.data.encode import encode_example
from percontrast_cli.data.prompts import PromptFormat
from percontrast_cli.data.retrieval import Retriever
from percontrast_cli.data.schema import Example, dataset_fingerprint
from percontrast_cli.data.sources import load_splits
from percontrast_cli.modeling.load import hub_revision, weights_fingerprint
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.steps.diagnostics import check_encoding


@dataclass
class TaskData:
    train: list[Example]
    test: list[Example]

    @functools.cached_property
    def train_fp(self) -> str:
        return dataset_fingerprint(self.train)


def load_task(cfg, check_retriever: bool = True) -> TaskData:
    """The task's train/test examples: generated (synthetic), from data.path, or from the hub. The
    retriever is built (a dense one loads its model) unless `check_retriever` is off (`plan`)."""
    task_cfg, data_cfg = cfg.task, cfg.data
    if task_cfg.source == "aloe":
        raise PercontrastError("task=aloe is evaluation only: `percontrast eval task=aloe checkpoint=<id>`")
    if task_cfg.source == "synthetic" and not data_cfg.path:
        if cfg.eval.split != "test":
            raise PercontrastError(
                f"task={task_cfg.name} generates train and test splits only: use eval.split=test"
            )
        size = task_cfg.n_train_users, task_cfg.n_test_users, task_cfg.examples_per_user
        generator = personas if task_cfg.name in personas.TASKS else synthetic
        splits = generator.generate(task_cfg.name, *size, task_cfg.seed)
    else:
        splits = load_splits(task_cfg, data_cfg, cfg.prompt.style, cfg.eval.split)
    trimmed = {
        name: cap_texts([trim(e, data_cfg) for e in rows[: data_cfg.limit]], data_cfg.max_text_chars, name)
        for name, rows in splits.items()
    }
    if check_retriever:
        retriever(cfg)  # a retriever that cannot load fails here, before any work
    return TaskData(trimmed["train"], trimmed["test"])


def trim(example: Example, data_cfg) -> Example:
    if data_cfg.max_profile_items is None or len(example.profile) <= data_cfg.max_profile_items:
        return example
    keep = len(example.profile) - data_cfg.max_profile_items
    texts = None if example.retrieval_texts is None else example.retrieval_texts[keep:]
    return dataclasses.replace(example, profile=example.profile[keep:], retrieval_texts=texts)


def encode_items(tokenizer, examples: list[Example], cfg, with_counterfactual: bool) -> list[dict]:
    """The one encoding of every stage: training, scoring and generation all start from these ids."""
    items = []
    fmt, chosen = PromptFormat.from_config(cfg), retriever(cfg)
    for index, example in enumerate(examples):
        item = encode_example(
            tokenizer,
            example,
            k=cfg.retrieval.k,
            max_length=cfg.model.max_length,
            counterfactual=cfg.estimator.counterfactual if with_counterfactual else None,
            pool=examples,
            chat=cfg.model.chat_template,
            fmt=fmt,
            retriever=chosen,
        )
        item["index"], item["id"] = index, example.id
        items.append(item)
    check_encoding(items, cfg)  # profiles or targets lost to model.max_length: a note, a warning or an error
    return items


def retriever(cfg) -> Retriever:
    """The configured retriever, built once per process (a dense one loads a model)."""
    return _retriever(cfg.retrieval.method, cfg.retrieval.bm25_tokens, cfg.retrieval.get("model"))


@functools.cache
def _retriever(method: str, bm25_tokens: str, model: str | None) -> Retriever:
    return Retriever(method, bm25_tokens, model)


def retriever_fingerprint(cfg) -> str | None:
    """The dense retriever's weights fingerprint (its files, or the hub commit it resolves to), which keys
    every prompt it builds; None for the other retrieval methods."""
    if cfg.retrieval.method != "contriever":
        return None
    return _retriever_fingerprint(str(cfg.retrieval.model), str(cfg.paths.cache))


@functools.cache
def _retriever_fingerprint(location: str, cache_root: str) -> str:
    from pathlib import Path

    revision = None if Path(location).is_dir() else hub_revision(location, None)
    return weights_fingerprint(location, revision, cache_root)
