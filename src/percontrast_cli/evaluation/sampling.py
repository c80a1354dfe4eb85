"""Sampled decoding for `eval` (eval.temperature > 0, eval.samples=N), seeded per target and sample.

Each generation (a test target's k-th sample) has its own random stream, a function of the run's seed, the
target's id and k alone, so its text does not depend on the batch it is generated in, on eval.batch_size or
on how a multi-process run shares the batches. The stream is spent through the Gumbel-max trick: after the
temperature and top-p warpers, each row's logits get independent Gumbel noise from its own generator and
the argmax is taken (what greedy decoding does with the scores it is given), which draws the token from
exactly the softmax that sampling at that temperature and top-p would draw from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")


def sample_seed(seed: int, target_id: str, sample: int) -> int:
    """The random seed of one generation: the run's seed, the target's id and the sample's number."""
    digest = hashlib.sha256(f"{seed}\0{target_id}\0{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # a non-negative int64


def per_sample(values: list[T], samples: int) -> list[T]:
    """Each value repeated for its target's samples, in target order: [a, a, b, b] for 2 samples."""
    return [value for value in values for _ in range(samples)]


def sample_numbers(targets: int, samples: int) -> list[int]:
    """The sample number of each entry of `per_sample`'s lists: [0, 1, 0, 1] for 2 targets x 2 samples."""
    return [k for _ in range(targets) for k in range(samples)]


class GumbelNoise:
    """A logits processor: adds Gumbel(0, 1) noise to each row's scores, drawn from that row's generator."""

    def __init__(self, seeds: list[int]):
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocabulary = scores.shape[-1]
        uniform = torch.stack(
            [torch.rand(vocabulary, generator=g, dtype=torch.float64) for g in self.generators]
        )
        tiny = torch.finfo(torch.float64).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp(tiny, 1 - 1e-16)))
        return scores + gumbel.to(device=scores.device, dtype=scores.dtype)


@dataclass(frozen=True)
class Sampling:
    """How `generate` samples: the warpers' settings and each item's seed."""

    temperature: float
    top_p: float
    seeds: list[int]

    def processors(self, positions: list[int]):
        """The logits processors of one batch (its rows: the items at `positions`)."""
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        steps = [TemperatureLogitsWarper(self.temperature)]
        if self.top_p < 1.0:
            steps.append(TopPLogitsWarper(self.top_p))
        steps.append(GumbelNoise([self.seeds[p] for p in positions]))
        return LogitsProcessorList(steps)


def sampling_of(eval_cfg, seed: int, target_ids: list[str]) -> Sampling | None:
    """eval.temperature > 0: every target's eval.samples generations, each with its own seed; None: greedy."""
    if eval_cfg.temperature == 0:
        return None
    seeds = [
        sample_seed(seed, target, k)
        for target, k in zip(
            per_sample(target_ids, eval_cfg.samples),
            sample_numbers(len(target_ids), eval_cfg.samples),
            strict=True,
        )
    ]
    return Sampling(float(eval_cfg.temperature), float(eval_cfg.top_p), seeds)
