"""Base models and how any model/checkpoint artifact is loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from percontrast_cli.modeling.load import (
    converted_smollm2,
    hub_revision,
    load_model_and_tokenizer,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from percontrast_cli.modeling.tiny import build_tiny_model, train_tokenizer
from percontrast_cli.steps.context import Context
from percontrast_cli.steps.produce import produce
from percontrast_cli.store.artifacts import Artifact
from percontrast_cli.store.identity import model_identity

if TYPE_CHECKING:  # an annotation only: building a model runs no task code
    from percontrast_cli.steps.task_data import TaskData


def load_model(ctx: Context, artifact: Artifact, with_model: bool = True, training: bool = False):
    """A model/checkpoint artifact's model and tokenizer: its own payload, or the pretrained source it
    points at (a local directory, or a hub id pinned to the revision it was registered with). Training keeps
    fp32 master weights (bf16 then runs as autocast, see train.training_arguments); scoring and generation
    load the resolved model.dtype directly."""
    dtype = torch.float32 if training else ctx.dtype
    if (artifact.path / "model").is_dir():
        return load_model_and_tokenizer(artifact.path / "model", with_model=with_model, dtype=dtype)
    source = json.loads((artifact.path / "source.json").read_text())
    return load_model_and_tokenizer(
        source["name_or_path"], with_model, revision=source.get("revision"), dtype=dtype
    )


def pretrained_model(ctx: Context) -> Artifact:
    """A `model` artifact that points at pretrained weights (embedded SmolLM2, hub id or local dir)."""
    cfg = ctx.cfg
    location, revision = pretrained_location(cfg)
    identity = model_identity(cfg, weights_fp=weights_fingerprint(location, revision, cfg.paths.cache))

    def build(tmp: Path, manifest: dict) -> str:
        _, tokenizer = load_model_and_tokenizer(location, with_model=False, revision=revision)
        (tmp / "source.json").write_text(json.dumps({"name_or_path": str(location), "revision": revision}))
        manifest["inputs"]["tokenizer"] = tokenizer_fingerprint(tokenizer)
        return f" ({location})"

    return produce(ctx, identity, build, role="model", done="registered")


def pretrained_location(cfg, convert: bool = True) -> tuple[str | Path | None, str | None]:
    """Where a pretrained model's weights are (a directory or a hub id) and the hub commit they resolve to.
    Without `convert`, the embedded SmolLM2 that was never converted has no location yet (None)."""
    if cfg.model.source == "smollm2":
        return converted_smollm2(cfg.paths.cache, convert=convert), None
    location = cfg.model.name_or_path
    revision = None if Path(location).is_dir() else hub_revision(location, cfg.model.get("revision"))
    return location, revision


def base_model(ctx: Context, data: TaskData) -> Artifact:
    """The starting point: pretrained weights, or for model=tiny a new tokenizer + initial weights."""
    cfg = ctx.cfg
    if cfg.model.source != "tiny":
        return pretrained_model(ctx)

    def build(tmp: Path, manifest: dict) -> None:
        texts = [t for e in data.train for t in (e.input, e.output, *e.profile)]
        tokenizer = train_tokenizer(texts, cfg.model.vocab_size)
        model = build_tiny_model(cfg.model, tokenizer, cfg.seed)
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        manifest["inputs"]["tokenizer"] = tokenizer_fingerprint(tokenizer)

    return produce(ctx, model_identity(cfg, data_fp=data.train_fp), build, role="model")


def named_checkpoint(ctx: Context, ref: str) -> Artifact:
    """A `checkpoint` (or base `model`) artifact named by id, path or `latest`."""
    return ctx.store.resolve("checkpoint", ref, also=("model",))
