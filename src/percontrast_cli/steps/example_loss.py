"""`inspect estimate=...`: the displayed example's loss under each `loss.normalize`, so the choice of
denominator can be seen on one example (docs/reference.md, the normaliser table)."""

from __future__ import annotations

import torch

from percontrast_cli.method.estimate import load_scores, teacher_forced_pass
from percontrast_cli.method.losses import NORMALIZATIONS, normalized, token_weights, weight_signal
from percontrast_cli.steps.context import Context
from percontrast_cli.steps.models import load_model, named_checkpoint
from percontrast_cli.steps.task_data import TaskData, encode_items
from percontrast_cli.store.artifacts import Artifact


def losses_by_normalizer(ctx: Context, estimate_artifact: Artifact, data: TaskData, index: int, loss_cfg):
    """``{normalize: loss}`` of training example ``index`` as one micro-batch, with ``loss_cfg``'s weights
    from the estimate's stored scores and the NLL of the checkpoint it scored; None when the weighting does
    not read PerContrast scores (its weights need a training pass, not an estimate)."""
    if weight_signal(loss_cfg) not in (None, "pir"):
        return None
    example = data.train[index]
    checkpoint = named_checkpoint(ctx, estimate_artifact.inputs["checkpoint"])
    model, tokenizer = load_model(ctx, checkpoint)
    model.to(ctx.device)
    items = encode_items(tokenizer, [example], ctx.cfg, with_counterfactual=False)
    (record,) = teacher_forced_pass(
        model, tokenizer.pad_token_id, items, 1, ctx.device, "score", counterfactual=False
    )
    nll = torch.from_numpy(-record.logp).double()
    scores = torch.from_numpy(load_scores(estimate_artifact.path)[example.id]).double()
    mask = torch.ones_like(nll, dtype=torch.bool)
    weights = token_weights(loss_cfg, mask, pir=scores).values.double()
    return {how: float((normalized(weights, mask, how) * nll).sum() / len(nll)) for how in NORMALIZATIONS}
