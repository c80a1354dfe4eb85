"""Offline fixtures: a tokenizer trained here, a seeded tiny Llama, synthetic examples, a temp output root."""

from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf

from percontrast_cli.data import synthetic
from percontrast_cli.data.encode import encode_example
from percontrast_cli.modeling.tiny import build_tiny_model, train_tokenizer

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: a worker (and the processes its tests start, which inherit the
    # variable) computes on one thread instead of every worker's torch taking every core
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

TINY = OmegaConf.create(
    {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2, "max_length": 256}
)


@pytest.fixture(scope="session")
def splits():
    return synthetic.generate("synthetic_email", n_train_users=4, n_test_users=2, examples_per_user=2, seed=0)


@pytest.fixture(scope="session")
def tokenizer(splits):
    texts = [t for e in splits["train"] for t in (e.input, e.output, *e.profile)]
    return train_tokenizer(texts, vocab_size=400)


@pytest.fixture()
def model(tokenizer):
    model = build_tiny_model(TINY, tokenizer, seed=0)
    model.eval()
    return model


@pytest.fixture()
def training_items(tokenizer, splits):
    """Four encoded training items with counterfactuals: enough for a PerCE (online) training step."""
    return [
        encode_example(tokenizer, e, k=5, max_length=512, counterfactual="drop", pool=splits["train"])
        for e in splits["train"][:4]
    ]


@pytest.fixture()
def outputs(tmp_path, monkeypatch):
    root = tmp_path / "outputs"
    monkeypatch.setenv("PERCONTRAST_OUTPUTS", str(root))
    return root


def loss_config(name: str, **overrides):
    """A shipped loss config (conf/loss/<name>.yaml) with overrides."""
    from importlib.resources import files

    cfg = OmegaConf.load(str(files("percontrast_cli") / "conf" / "loss" / f"{name}.yaml"))
    return OmegaConf.merge(cfg, overrides)


def random_batch(vocab: int, lengths: list[int], n_targets: list[int], seed: int):
    """Right-padded logits-free batch: input ids and labels with the last n tokens of each row as targets."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    labels = torch.full((len(lengths), width), -100)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, (length, n) in enumerate(zip(lengths, n_targets, strict=True)):
        ids[row, :length] = torch.randint(3, vocab, (length,), generator=g)
        labels[row, length - n : length] = ids[row, length - n : length]
        mask[row, :length] = 1
    return ids, labels, mask


def pytest_collection_modifyitems(items):
    """The `slow` tests first (a stable sort): under pytest-xdist (`make test`) a long test that starts last
    is the suite's tail while the other workers idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
