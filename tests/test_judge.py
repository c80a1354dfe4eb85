"""The LLM judge: the expected 1-5 score from next-token probabilities (checked by hand), batched scoring,
the parsed variant, its agreement with persona recall, and the eval hook on a persona task."""

import copy
import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from percontrast_cli.data import personas
from percontrast_cli.data.retrieval import Retriever
from percontrast_cli.evaluation.judge import (
    Judge,
    expected_scores,
    judge_agreement,
    judge_eval,
    judge_weights,
    parse_score,
    personalization_prompt,
    score_token_ids,
)
from percontrast_cli.evaluation.judge_checks import mass_metrics, swap_accuracy, swap_pairs, swapped_reference
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.store.artifacts import ArtifactStore


def test_expected_score_is_the_probability_weighted_mean_of_a_hand_computation():
    # vocabulary of 8; score 5 has two tokens (as "5" and " 5" in many vocabularies): their mass adds up
    logits = torch.tensor(
        [[0.3, 1.0, -0.5, 2.0, 0.0, 0.7, 9.0, -0.2], [5.0, 0.0, 0.0, 0.0, 0.0, 0.0, -3.0, -30.0]]
    )
    token_ids = [[1], [2], [3], [4], [5, 7]]
    expected, probs, on_scores = expected_scores(logits, token_ids)
    for row in range(2):
        mass = [math.exp(logits[row, 1]), math.exp(logits[row, 2]), math.exp(logits[row, 3])]
        mass += [math.exp(logits[row, 4]), math.exp(logits[row, 5]) + math.exp(logits[row, 7])]
        by_hand = sum((s + 1) * m for s, m in enumerate(mass)) / sum(mass)
        assert expected[row].item() == pytest.approx(by_hand, abs=1e-6)
        assert probs[row].tolist() == pytest.approx([m / sum(mass) for m in mass], abs=1e-6)
        assert 1.0 <= expected[row].item() <= 5.0
        # the mass on the score tokens before renormalising: their share of the whole softmax
        everything = sum(math.exp(v) for v in logits[row].tolist())
        assert on_scores[row].item() == pytest.approx(sum(mass) / everything, rel=1e-5)
    assert on_scores[0].item() < 0.01  # token 6 (logit 9) takes nearly all: the judge barely answers
    # the first row by hand: exp(1), exp(-.5), exp(2), exp(0), exp(.7)+exp(-.2): 44.2609 / 14.5464
    assert expected[0].item() == pytest.approx(3.0428, abs=1e-4)
    assert expected[1].item() == pytest.approx(3.0)  # other tokens' logits do not matter: uniform over 1-5


def test_expected_score_reaches_the_ends_of_the_scale():
    sure_five = torch.full((1, 6), -50.0)
    sure_five[0, 5] = 50.0
    sure_one = torch.full((1, 6), -50.0)
    sure_one[0, 1] = 50.0
    ids = [[1], [2], [3], [4], [5]]
    assert expected_scores(sure_five, ids)[0].item() == pytest.approx(5.0)
    assert expected_scores(sure_five, ids)[2].item() == pytest.approx(1.0)
    assert expected_scores(sure_one, ids)[0].item() == pytest.approx(1.0)


def test_score_tokens_decode_to_their_digit(tokenizer):
    table = score_token_ids(tokenizer)
    assert len(table) == 5
    for score, ids in enumerate(table, start=1):
        assert ids and all(tokenizer.decode([i]).strip() == str(score) for i in ids)
    assert len({i for ids in table for i in ids}) == sum(len(ids) for ids in table)  # no token counts twice


@pytest.mark.parametrize(
    ("reply", "score"), [("4", 4), (" 5\n", 5), ("Score: 2/5", 2), ("7", None), ("great!", None), ("0", None)]
)
def test_parsed_score(reply, score):
    assert parse_score(reply) == score


def test_batched_expected_scores_equal_one_prompt_at_a_time(model, tokenizer):
    """Left padding and length batching do not change a prompt's score."""
    judge = Judge(model, tokenizer, torch.device("cpu"), batch_size=3, max_length=256)
    prompts = [
        "Rate this reply: hello",
        "A much longer prompt about the user and the reply " * 3,
        "Short",
        "x y",
    ]
    batched = judge.score(prompts)
    ids = score_token_ids(tokenizer)
    for prompt, verdict in zip(prompts, batched, strict=True):
        text = f"User: {prompt}\nAssistant:"  # the tiny tokenizer has no chat template: a plain transcript
        input_ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            alone = expected_scores(model(input_ids=input_ids).logits[:, -1], ids)[0].item()
        assert verdict.score == pytest.approx(alone, abs=1e-4)
        assert 1.0 <= verdict.score <= 5.0 and sum(verdict.probs) == pytest.approx(1.0)


def test_parsed_mode_generates_and_counts_failures(model, tokenizer):
    judge = Judge(model, tokenizer, torch.device("cpu"), mode="parsed", batch_size=2, max_new_tokens=3)
    verdicts = judge.score(["one", "two", "three"])
    for verdict in verdicts:
        assert verdict.reply is not None and verdict.score == parse_score(verdict.reply)
    with pytest.raises(PercontrastError, match="judge.mode='vibes'"):
        Judge(model, tokenizer, torch.device("cpu"), mode="vibes")


def test_judge_agreement_on_a_fixture():
    recall = [0.0, 0.25, 0.5, 0.5, 1.0, None]
    judge = [1.2, 2.0, 2.5, 3.9, 4.8, 3.0]  # the last example has no recall: left out
    # ranks: recall 1, 2, 3.5, 3.5, 5; judge 1, 2, 3, 4, 5 -> Pearson correlation of the ranks
    r, j = [1, 2, 3.5, 3.5, 5], [1, 2, 3, 4, 5]
    mr, mj = sum(r) / 5, sum(j) / 5
    cov = sum((a - mr) * (b - mj) for a, b in zip(r, j, strict=True))
    by_hand = cov / math.sqrt(sum((a - mr) ** 2 for a in r) * sum((b - mj) ** 2 for b in j))
    assert judge_agreement(judge, recall) == pytest.approx(by_hand)  # 0.9747
    assert judge_agreement([5, 4, 3], [0.1, 0.2, 0.3]) == pytest.approx(-1.0)
    assert judge_agreement([3, 3, 3], [0.1, 0.2, 0.3]) is None  # constant judge: undefined
    assert judge_agreement([1, 2], [0.1, 0.2]) is None  # too few pairs


def config(*overrides):
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_personalization_prompt_shows_profile_request_and_response():
    example = personas.generate("persona_email", 2, 1, 1, seed=0)["test"][0]
    cfg = config("judge.profile_items=2", "judge.item_chars=30")
    prompt = personalization_prompt(cfg.judge, example, "Dear team, ...", Retriever("bm25", "words"))
    assert f"Here is the user's request: {example.input}\n" in prompt
    assert "Here is the response: Dear team, ...\n" in prompt
    profile_lines = [line for line in prompt.splitlines() if line.startswith("- ")]
    assert len(profile_lines) == 2 and all(len(line) <= 32 for line in profile_lines)
    assert prompt.rstrip().endswith("Only output the score from 1-5.")


def test_judge_eval_scores_rows_and_reports_agreement(tmp_path, model, tokenizer):
    """eval.judge=<a model directory>: every row gets judge_score; with persona recall in the rows, the
    metrics carry the judge's agreement with it."""
    model.save_pretrained(tmp_path / "judge")
    tokenizer.save_pretrained(tmp_path / "judge")
    cfg = config(
        f"eval.judge={tmp_path / 'judge'}",
        f"paths.root={tmp_path / 'out'}",
        "judge.max_length=1024",
        "judge.profile_items=1",
        "judge.item_chars=80",
    )
    examples = personas.generate("persona_email", 2, 2, 2, seed=0)["test"]
    predictions = [e.output[: 40 * (i + 1)] for i, e in enumerate(examples)]
    # per-example persona fields as the eval writes them: recall 0, 1/2, 1, and none present (left out)
    fields = [(["name", "town"], []), (["name", "town"], ["town"]), (["emoji"], ["emoji"]), ([], [])]
    rows = [
        {"id": e.id, "persona_present": present, "persona_recalled": recalled}
        for e, (present, recalled) in zip(examples, fields, strict=True)
    ]
    store = ArtifactStore(tmp_path / "store")
    metrics = judge_eval(cfg, store, torch.device("cpu"), examples, predictions, rows)
    scores = [row["judge_score"] for row in rows]
    assert all(1.0 <= s <= 5.0 for s in scores)
    assert metrics["judge_score"] == pytest.approx(sum(scores) / len(scores))
    assert metrics["judge_agreement"] == pytest.approx(judge_agreement(scores[:3], [0.0, 0.5, 1.0]))
    masses = [row["judge_score_mass"] for row in rows]
    assert all(0 < m < 1 for m in masses) and metrics["judge_score_mass_mean"] == pytest.approx(
        np.mean(masses)
    )
    assert metrics["judge_score_mass_low_share"] == pytest.approx(np.mean([m < 0.5 for m in masses]))
    # the swap check: the 4 targets of 2 users, each reference against itself with the other user's values
    assert metrics["judge_swap_pairs"] == 4 and 0 <= metrics["judge_swap_accuracy"] <= 1
    assert judge_weights(cfg, store)  # the judge's weights fingerprint, which keys the eval
    assert (
        judge_eval(config(), store, torch.device("cpu"), examples, predictions, rows) == {}
    )  # eval.judge=none


@pytest.mark.slow
def test_smollm2_judge_scores_a_persona_generation(tmp_path):
    """SmolLM2 as the judge, on CPU: finite expected scores in [1, 5] from its next-token probabilities."""
    pytest.importorskip("gguf")
    cfg = config("eval.judge=smollm2", f"paths.root={tmp_path}")
    examples = personas.generate("persona_email", 2, 1, 2, seed=0)["test"]
    rows = [{"id": e.id} for e in examples]
    store = ArtifactStore(tmp_path / "store")
    metrics = judge_eval(cfg, store, torch.device("cpu"), examples, [e.output for e in examples], rows)
    assert 1.0 <= metrics["judge_score"] <= 5.0 and "judge_agreement" not in metrics  # no recall in the rows


def test_swapped_reference_writes_the_other_users_values():
    from .test_persona_metrics import ADA_EXAMPLE, BODHI, BODHI_EXAMPLE, REFERENCE

    swapped = swapped_reference(ADA_EXAMPLE, BODHI_EXAMPLE)
    expected = (
        REFERENCE.replace("Ashford", "Elmford")
        .replace("Aeroara", "Hexmark")
        .replace("trail running", "running")
        .replace("Hi team", "Hello team")
        .replace(":)", "")  # Bodhi writes no emoji (the value is found as written, without its space)
        .replace("Thanks,", "Best,")
        .replace("Ada Abbott", "Bodhi Brandt")
    )
    assert swapped == expected
    assert swapped_reference(BODHI_EXAMPLE, BODHI_EXAMPLE) is None  # the same values: nothing to swap
    assert BODHI["name"] in swapped


def test_swap_accuracy_is_the_share_where_the_true_reference_scores_higher():
    examples = personas.generate("persona_email", 2, 3, 2, seed=0)["test"]
    pairs = swap_pairs(examples + examples[:2])  # repeated targets (eval.samples) count once
    assert len(pairs) == 6 and all(text != example.output for example, text in pairs)
    assert {e.user_id for e, _ in pairs} == {e.user_id for e in examples}

    def prompt(example, response):
        return f"{example.persona_values['name']}|{response}"

    def knows_the_user(prompts):  # a judge that checks the user's name is in the response
        return [float(p.split("|")[0] in p.split("|")[1]) for p in prompts]

    assert swap_accuracy(examples, prompt, knows_the_user)["judge_swap_accuracy"] == 1.0
    constant = swap_accuracy(examples, prompt, lambda prompts: [3.0] * len(prompts))
    assert constant == {"judge_swap_accuracy": 0.5, "judge_swap_pairs": 6.0}  # ties: chance
    assert swap_accuracy(examples[:2], prompt, knows_the_user) == {}  # one user: nobody to swap with


def test_most_low_mass_verdicts_give_a_warning(capsys):
    assert mass_metrics([None, None]) == {}
    quiet = mass_metrics([0.9, 0.8, 0.2])
    assert quiet == pytest.approx({"judge_score_mass_mean": 1.9 / 3, "judge_score_mass_low_share": 1 / 3})
    assert "warning" not in capsys.readouterr().err
    mass_metrics([0.1, 0.2, 0.9])
    assert "less than 0.5 of its probability on the score tokens 1-5 for 67%" in capsys.readouterr().err


QWEN3_LIKE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)


def test_a_thinking_chat_template_runs_with_thinking_off(tokenizer):
    """A Qwen3-style template: every role's prompt (judge, simulator, model under test) opens the reply with
    an empty reasoning block; reasoning left in a reply is stripped before it is judged or passed on."""
    from percontrast_cli.data.encode import render_prompt
    from percontrast_cli.evaluation.chat import render_chat, strip_reasoning

    thinking = copy.deepcopy(tokenizer)
    thinking.chat_template = QWEN3_LIKE
    messages = [{"role": "user", "content": "Rate this."}]
    assert render_chat(thinking, messages).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert render_prompt(thinking, "Write.", chat=True).endswith("<think>\n\n</think>\n\n")
    assert strip_reasoning("<think>\nthe user wants 4\n</think>\n\n4") == "4"
    assert strip_reasoning("<think>never closed") == "" and strip_reasoning("plain 5") == "plain 5"
    example = personas.generate("persona_email", 2, 1, 1, seed=0)["test"][0]
    prompt = personalization_prompt(
        config().judge, example, "<think>plan</think>Hi all", Retriever("bm25", "words")
    )
    assert "Here is the response: Hi all\n" in prompt and "plan" not in prompt
