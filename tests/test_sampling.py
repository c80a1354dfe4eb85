"""Sampled decoding (issue 29): eval.temperature > 0 samples each target's eval.samples generations, each
from its own seed (the run's seed, the target's id, the sample's number), so a text does not depend on the
batch it is generated in; the Gumbel-max step draws from the warped softmax."""

import numpy as np
import torch
from omegaconf import OmegaConf

from percontrast_cli.data.encode import encode_example
from percontrast_cli.evaluation.generate import generate
from percontrast_cli.evaluation.sampling import (
    GumbelNoise,
    Sampling,
    per_sample,
    sample_numbers,
    sample_seed,
    sampling_of,
)


def test_gumbel_noise_then_argmax_draws_from_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    draws = 4000
    chosen = [int(GumbelNoise([seed])(None, logits).argmax()) for seed in range(draws)]
    counts = np.bincount(chosen, minlength=4) / draws
    expected = torch.softmax(logits[0], -1).numpy()
    assert np.abs(counts - expected).max() < 0.03, (counts, expected)
    # a row's draws depend on its own seed only, not on the rows beside it
    together = GumbelNoise([5, 6])(None, logits.repeat(2, 1))
    assert torch.equal(together[1], GumbelNoise([6])(None, logits)[0])


def test_each_target_and_sample_has_its_own_seed():
    assert sample_seed(0, "u1-0", 0) == sample_seed(0, "u1-0", 0)
    seeds = {sample_seed(s, t, k) for s in (0, 1) for t in ("a", "b") for k in (0, 1)}
    assert len(seeds) == 8 and all(0 <= s < 2**63 for s in seeds)
    assert per_sample(["a", "b"], 2) == ["a", "a", "b", "b"] and sample_numbers(2, 2) == [0, 1, 0, 1]
    greedy = OmegaConf.create({"temperature": 0, "top_p": 1.0, "samples": 1})
    assert sampling_of(greedy, 0, ["a"]) is None
    sampled = sampling_of(OmegaConf.create({"temperature": 0.4, "top_p": 0.9, "samples": 2}), 3, ["a", "b"])
    assert sampled.seeds == [sample_seed(3, t, k) for t in ("a", "b") for k in (0, 1)]
    steps = sampled.processors([0, 3])
    assert [type(s).__name__ for s in steps] == ["TemperatureLogitsWarper", "TopPLogitsWarper", "GumbelNoise"]


def test_a_sampled_text_does_not_depend_on_its_batch(model, tokenizer, splits):
    examples = splits["test"][:4]
    items = [
        encode_example(tokenizer, e, k=2, max_length=256, counterfactual="drop", pool=examples)
        for e in examples
    ]
    items = per_sample(items, 2)
    sampling = Sampling(1.0, 1.0, [sample_seed(0, e.id, k) for e in examples for k in (0, 1)])
    outputs = {}
    for batch_size in (1, 3, 8):
        settings = OmegaConf.create({"batch_size": batch_size, "max_new_tokens": 6})
        outputs[batch_size], _ = generate(
            model, tokenizer, items, settings, torch.device("cpu"), stop_ids=[2], sampling=sampling
        )
    assert outputs[1] == outputs[3] == outputs[8]
    assert len(set(outputs[1])) > 4  # the tiny model at temperature 1: samples differ
    other = Sampling(1.0, 1.0, [s + 1 for s in sampling.seeds])
    settings = OmegaConf.create({"batch_size": 8, "max_new_tokens": 6})
    assert generate(model, tokenizer, items, settings, torch.device("cpu"), [2], other)[0] != outputs[8]
