"""Context-aware decoding (CAD; Shi et al. 2024): the PerContrast contrast at decode time, with no training.

    p(y_t) ∝ p(y_t | x, P, y_<t) · (p(y_t | x, P, y_<t) / p(y_t | x, P', y_<t)) ** alpha

i.e. ``(1 + alpha) * log p_factual - alpha * log p_counterfactual`` as the next-token scores, before any
sampling warper (temperature, top-p). ``P'`` is the estimator's counterfactual (``drop``, ``empty``,
``other_user``). transformers' own UnbatchedClassifierFreeGuidanceLogitsProcessor computes the same scores
(guidance scale ``1 + alpha``) but gives no position ids to left-padded prompts (their positions would count
the padding, unlike training's and scoring's), so it is not used."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import LogitsProcessor

from percontrast_cli.data.encode import pad_left
from percontrast_cli.modeling.forward import accepts_logits_to_keep


class ContextAwareDecoding(LogitsProcessor):
    """Runs the counterfactual prompts beside generation (their own key/value cache, fed each generated token)
    and turns the factual scores into CAD's."""

    def __init__(self, model, counterfactual_prompts: list[list[int]], pad_id: int, alpha: float, device):
        self.model, self.alpha = model, float(alpha)
        self.pending = pad_left(counterfactual_prompts, pad_id).to(device)  # the next ids to feed
        self.mask = pad_left([[1] * len(p) for p in counterfactual_prompts], 0).to(device)
        self.cache = None
        self.head = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}

    @torch.no_grad()
    def counterfactual_logprobs(self) -> torch.Tensor:
        # left padding: positions count from each row's first real token (as in training and scoring)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -self.pending.shape[1] :]
        out = self.model(
            input_ids=self.pending,
            attention_mask=self.mask,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
            **self.head,
        )
        self.cache = out.cache
        return F.log_softmax(out.logits[:, -1].float(), dim=-1)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:  # the token generated since the last call, appended to every row
            self.pending = input_ids[:, -1:]
            self.mask = torch.cat([self.mask, self.mask.new_ones(len(input_ids), 1)], dim=1)
        counterfactual = self.counterfactual_logprobs()
        factual = F.log_softmax(scores.float(), dim=-1)
        return ((1 + self.alpha) * factual - self.alpha * counterfactual).to(scores.dtype)
