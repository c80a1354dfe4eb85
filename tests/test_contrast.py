import pytest
import torch

from percontrast_cli.data.encode import IGNORE, Collator, encode_example, flat_targets
from percontrast_cli.method.contrast import contrast_scores
from percontrast_cli.method.estimate import teacher_forced_pass


def test_score_equals_hand_computed_logprob_difference(model, tokenizer, splits):
    example = splits["train"][0]
    item = encode_example(
        tokenizer, example, k=5, max_length=1024, counterfactual="drop", pool=splits["train"]
    )
    batch = Collator(tokenizer.pad_token_id)([item])
    scores = flat_targets(contrast_scores(model, batch), batch)

    target = tokenizer(example.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert len(scores) == len(target)
    # the prompts the production path encodes: the ids before the target, with and without the profile
    factual, counterfactual = prompt_ids(item, ""), prompt_ids(item, "cf_")
    assert tokenizer.decode(factual).startswith("User profile:\n") and factual != counterfactual
    for t in (0, 3, len(target) - 1):  # first, a middle and the end-of-sequence token

        def logp(prompt_ids: list[int], t: int = t) -> float:
            ids = torch.tensor([prompt_ids + target[:t]])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, -1]
            return torch.log_softmax(logits.double(), -1)[target[t]].item()

        by_hand = logp(factual) - logp(counterfactual)
        assert abs(scores[t].item() - by_hand) < 1e-4


def prompt_ids(item: dict, prefix: str) -> list[int]:
    """An encoded item's prompt: its ids before the target's."""
    ids, labels = item[f"{prefix}input_ids"], item[f"{prefix}labels"]
    return ids[: len(ids) - sum(1 for x in labels if x != IGNORE)]


def test_counterfactual_prompts_lack_the_profile(splits, tokenizer):
    example, pool = splits["train"][0], splits["train"]

    def prompts(k: int, mode: str) -> tuple[str, str]:
        """The factual and counterfactual prompt texts as encoded (decoded from the item's ids)."""
        item = encode_example(tokenizer, example, k=k, max_length=1024, counterfactual=mode, pool=pool)
        return tuple(
            tokenizer.decode(prompt_ids(item, p), clean_up_tokenization_spaces=False) for p in ("", "cf_")
        )

    factual, _ = prompts(5, "drop")
    assert all(doc in factual for doc in example.profile)
    for mode in ("drop", "empty", "other_user"):
        _, prompt = prompts(5, mode)
        assert not any(doc in prompt for doc in example.profile), mode
        assert example.input in prompt
    assert prompts(5, "drop")[1] == prompts(0, "drop")[0] == f"Request: {example.input}\nResponse:\n"
    assert "User profile:" in prompts(5, "empty")[1]
    other = prompts(5, "other_user")[1]
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
        batch = Collator(tokenizer.pad_token_id)([item])
        single = flat_targets(contrast_scores(model, batch), batch)
        torch.testing.assert_close(torch.from_numpy(record.scores), single, atol=1e-4, rtol=1e-4)
        assert record.personal.sum() > 0


def test_other_user_counterfactual_never_uses_the_same_user(splits):
    import pytest

    from percontrast_cli.data.prompts import other_user_example
    from percontrast_cli.runtime.errors import PercontrastError

    pool = splits["train"]
    assert all(other_user_example(e, pool).user_id != e.user_id for e in pool)
    assert other_user_example(pool[0], pool) == other_user_example(pool[0], pool)  # deterministic
    same_user = [e for e in pool if e.user_id == pool[0].user_id]
    with pytest.raises(PercontrastError, match="at least two users"):
        other_user_example(pool[0], same_user)


def full_logits_nll(model, items):
    """The reference: each sequence alone (no padding), full-vocabulary logits at every position."""
    rows = []
    for item in items:
        logits = model(input_ids=torch.tensor([item["input_ids"]])).logits[0, :-1].float()
        labels = torch.tensor(item["labels"][1:])
        nll = torch.nn.functional.cross_entropy(logits, labels.clamp(min=0), reduction="none")
        rows.append(nll[labels != -100])
    return torch.cat(rows)


@pytest.mark.parametrize("tied", [True, False])
def test_target_only_logits_match_the_full_path(tokenizer, splits, tied):
    """Loss, gradients and PerContrast scores of the left-padded, tail-logits path equal those of full
    logits on each unpadded sequence, for a model with tied embeddings and one without."""
    from percontrast_cli.method.losses import token_nll, weighted_nll
    from percontrast_cli.modeling.forward import tail, target_logits
    from percontrast_cli.modeling.tiny import build_tiny_model

    from .conftest import TINY

    model = build_tiny_model(TINY, tokenizer, seed=1)
    if not tied:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone() + 0.01)
    model.eval()
    examples = splits["train"][:4]
    items = [
        encode_example(tokenizer, e, k=k, max_length=256, counterfactual="drop", pool=examples)
        for k, e in zip([5, 1, 3, 0], examples, strict=True)  # different prompt lengths: real padding
    ]
    batch = Collator(tokenizer.pad_token_id)(items)
    logits = target_logits(model, batch)
    assert logits.shape[1] == batch["keep"] < batch["input_ids"].shape[1]  # only the tail was projected
    labels = tail(batch["labels"], batch["keep"])
    ours = weighted_nll(token_nll(logits, labels), labels)
    (grads_ours,) = torch.autograd.grad(ours, [model.model.embed_tokens.weight])
    reference_nll = full_logits_nll(model, items)
    reference = reference_nll.mean()
    (grads_ref,) = torch.autograd.grad(reference, [model.model.embed_tokens.weight])
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads_ours, grads_ref, atol=1e-6, rtol=1e-4)
    with torch.no_grad():
        scores = flat_targets(contrast_scores(model, batch), batch)
        cf_items = [{"input_ids": i["cf_input_ids"], "labels": i["cf_labels"]} for i in items]
        reference_scores = full_logits_nll(model, cf_items) - full_logits_nll(model, items)
    torch.testing.assert_close(scores, reference_scores, atol=1e-4, rtol=1e-4)
