import torch

from percontrast_cli.contrast import contrast_scores
from percontrast_cli.data.encode import Collator, encode_example
from percontrast_cli.data.prompts import counterfactual_prompt, factual_prompt
from percontrast_cli.estimate import teacher_forced_pass


def test_score_equals_hand_computed_logprob_difference(model, tokenizer, splits):
    example = splits["train"][0]
    item = encode_example(
        tokenizer, example, k=5, max_length=1024, counterfactual="drop", pool=splits["train"]
    )
    batch = Collator(tokenizer.pad_token_id)([item])
    scores = contrast_scores(model, batch)

    target = tokenizer(example.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert len(scores) == len(target)
    for t in (0, 3, len(target) - 1):  # first, a middle and the end-of-sequence token

        def logp(prompt: str, t: int = t) -> float:
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt_ids + target[:t]])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, -1]
            return torch.log_softmax(logits.double(), -1)[target[t]].item()

        by_hand = logp(factual_prompt(example, 5)) - logp(counterfactual_prompt(example, 5, "drop", []))
        assert abs(scores[t].item() - by_hand) < 1e-4


def test_counterfactual_prompts_lack_the_profile(splits, tokenizer):
    example, pool = splits["train"][0], splits["train"]
    factual = factual_prompt(example, 5)
    assert all(doc in factual for doc in example.profile)
    for mode in ("drop", "empty", "other_user"):
        prompt = counterfactual_prompt(example, 5, mode, pool)
        assert not any(doc in prompt for doc in example.profile), mode
        assert example.input in prompt
    assert counterfactual_prompt(example, 5, "drop", pool) == factual_prompt(example, 0)
    assert "User profile:" in counterfactual_prompt(example, 5, "empty", pool)
    other = counterfactual_prompt(example, 5, "other_user", pool)
    assert any(e.user_id != example.user_id and e.profile[0] in other for e in pool)
    # and the encoded counterfactual sequence holds none of the profile's tokens as a contiguous run
    item = encode_example(tokenizer, example, k=5, max_length=256, counterfactual="drop", pool=pool)
    doc_ids = tokenizer(example.profile[0], add_special_tokens=False)["input_ids"]
    seq = item["cf_input_ids"]
    assert not any(seq[i : i + len(doc_ids)] == doc_ids for i in range(len(seq)))
    assert item["cf_labels"][-len(item["personal"]) :] == item["labels"][-len(item["personal"]) :]


def test_dataset_pass_matches_batch_scores(model, tokenizer, splits):
    """Batched scoring over padded batches gives the per-example scores of unbatched scoring."""
    examples = splits["train"][:3]
    items = [
        encode_example(tokenizer, e, k=5, max_length=256, counterfactual="drop", pool=examples)
        for e in examples
    ]
    records = teacher_forced_pass(
        model, tokenizer.pad_token_id, items, batch_size=3, device="cpu", description="t"
    )
    for item, record in zip(items, records, strict=True):
        single = contrast_scores(model, Collator(tokenizer.pad_token_id)([item]))
        torch.testing.assert_close(torch.from_numpy(record.scores), single, atol=1e-4, rtol=1e-4)
        assert record.personal.sum() > 0


def test_other_user_counterfactual_never_uses_the_same_user(splits):
    import pytest

    from percontrast_cli.data.prompts import other_user_example
    from percontrast_cli.errors import PercontrastError

    pool = splits["train"]
    assert all(other_user_example(e, pool).user_id != e.user_id for e in pool)
    assert other_user_example(pool[0], pool) == other_user_example(pool[0], pool)  # deterministic
    same_user = [e for e in pool if e.user_id == pool[0].user_id]
    with pytest.raises(PercontrastError, match="at least two users"):
        other_user_example(pool[0], same_user)
