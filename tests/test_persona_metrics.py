"""Generation-level persona metrics (issue 19): recall, over-insertion and leakage equal hand counts on
hand-made generations; the ground truth travels with the examples (generator and data files); NLL rows."""

import json
import random

import numpy as np
import pytest
from omegaconf import OmegaConf

from percontrast_cli.data import personas, synthetic
from percontrast_cli.data.schema import Example, validate_row, write_examples
from percontrast_cli.evaluation.generate import score_outputs, token_metrics
from percontrast_cli.evaluation.persona_metrics import (
    breakdown_counts,
    persona_metrics,
    request_subject,
    score_generation,
    value_pool,
)
from percontrast_cli.method.estimate import TokenRecord
from percontrast_cli.runtime.errors import PercontrastError

ADA = {
    "name": "Ada Abbott",
    "town": "Ashford",
    "brand": "Aeroara",
    "catchphrase": "My motto has not changed: finish what you start.",
    "hobby": "trail running",
    "greeting": "Hi",
    "signoff": "Thanks",
    "emoji": " :)",
}
BODHI = {
    "name": "Bodhi Brandt",
    "town": "Elmford",
    "brand": "Hexmark",
    "catchphrase": "Call me old-fashioned, but kindness costs nothing.",
    "hobby": "running",
    "greeting": "Hello",
    "signoff": "Best",
    "emoji": "",
}
# Ada's reference writes every field but the catchphrase.
REFERENCE = (
    "Hi team,\nI live in Ashford. My Aeroara shoes are great for trail running. See you soon. :)\n"
    "Thanks,\nAda Abbott"
)


def example(user: str, persona: dict, output: str, fields) -> Example:
    return Example(
        id=f"{user}-0",
        user_id=user,
        input="Write an email.",
        output=output,
        profile=("...",),
        persona=tuple(persona.items()),
        persona_fields=tuple(fields),
    )


ADA_EXAMPLE = example("ada", ADA, REFERENCE, [f for f in ADA if f != "catchphrase"])
BODHI_EXAMPLE = example("bodhi", BODHI, "Hello all,\nBest, Bodhi Brandt", ["greeting", "signoff", "name"])
POOL = value_pool([ADA_EXAMPLE, BODHI_EXAMPLE])

# Recalls town and greeting (2 of 7: "Ada" is not the full name, "running" is not "trail running",
# "Thanks again," is not the sign-off "Thanks,", no ":)"); writes the catchphrase the reference lacks
# (over-insertion 1 of 1); writes Bodhi's hobby, brand and sign-off (leakage: 3 fields of 8).
MIXED = (
    "Hi team,\nI live in Ashford and go running in my Hexmark shoes. My motto has not changed: finish "
    "what you start. Thanks again, see you.\nBest,\nAda"
)
# Everything, nothing extra: Bodhi's "running" only inside Ada's own "trail running" is no leak.
PERFECT = "Hi all, trail running near Ashford with Aeroara gear :) Thanks,\nAda Abbott"


def test_recall_over_insertion_and_leakage_equal_hand_counts():
    mixed = score_generation(ADA_EXAMPLE, MIXED, POOL)
    assert mixed["persona_present"] == ["name", "town", "brand", "hobby", "greeting", "signoff", "emoji"]
    assert mixed["persona_recalled"] == ["town", "greeting"]
    assert mixed["persona_absent"] == ["catchphrase"]
    assert mixed["persona_over_inserted"] == ["catchphrase"]
    assert mixed["persona_leaked"] == {"brand": ["Hexmark"], "hobby": ["running"], "signoff": ["Best"]}
    assert mixed["persona_n_fields"] == 8

    perfect = score_generation(ADA_EXAMPLE, PERFECT, POOL)
    assert perfect["persona_recalled"] == perfect["persona_present"]
    assert perfect["persona_over_inserted"] == [] and perfect["persona_leaked"] == {}

    metrics = persona_metrics([mixed, perfect])
    assert metrics["persona_recall"] == pytest.approx(9 / 14)
    assert metrics["persona_recall_name"] == 0.5 and metrics["persona_recall_town"] == 1.0
    assert "persona_recall_catchphrase" not in metrics  # no reference writes it
    assert metrics["persona_over_insertion"] == pytest.approx(1 / 2)
    assert metrics["persona_leakage"] == pytest.approx(3 / 16)


def test_copy_and_slot_recall_catchphrase_rate_and_leakage_split_equal_hand_counts():
    """MIXED: copy fields (name, greeting, sign-off, emoji) 1 of 4 (the greeting), slot fields (town, brand,
    hobby) 1 of 3 (the town), the catchphrase written (the reference has none), Bodhi's brand a cross-user
    value (1 of the 4 open fields), his hobby and sign-off a style mismatch (2 of the 4 closed-set fields).
    PERFECT: 4 of 4, 3 of 3, no catchphrase, nothing leaked."""
    mixed = breakdown_counts(score_generation(ADA_EXAMPLE, MIXED, POOL))
    assert mixed["persona_recall_copy"] == (1, 4) and mixed["persona_recall_slot"] == (1, 3)
    assert mixed["persona_catchphrase_rate"] == (1, 1) and mixed["persona_catchphrase_reference_rate"] == (
        0,
        1,
    )
    assert mixed["persona_leakage_values"] == (1, 4) and mixed["persona_style_mismatch"] == (2, 4)
    rows = [score_generation(ADA_EXAMPLE, text, POOL) for text in (MIXED, PERFECT)]
    metrics = persona_metrics(rows)
    assert metrics["persona_recall_copy"] == pytest.approx(5 / 8)
    assert metrics["persona_recall_slot"] == pytest.approx(4 / 6)
    assert metrics["persona_catchphrase_rate"] == 0.5 and metrics["persona_catchphrase_reference_rate"] == 0
    assert metrics["persona_leakage_values"] == pytest.approx(1 / 8)
    assert metrics["persona_style_mismatch"] == pytest.approx(2 / 8)
    assert "persona_slot_accuracy" not in metrics  # no task templates given: no slot sentences to read


def test_slot_conditional_accuracy_and_recall_per_request_subject_equal_hand_counts():
    """Four known paraphrases of slot sentences (persona_pools.json): the town sentence twice, once with
    Ada's town and once with Bodhi's; the hobby sentence with "running" (not Ada's "trail running"); the
    brand sentence of another subject with Ada's brand. Slot accuracy 2 of 4 (town 1/2, brand 1/1, hobby
    0/1); the request is about a delayed order, where the slot recall is 2 of 3 (town, brand)."""
    ada = Example(**{**ADA_EXAMPLE.__dict__, "input": "Write an email to team about a delayed order."})
    generation = (
        "Hi team,\nI live in Ashford, so it may be sitting at the local depot. It might be at the depot in "
        "Elmford, where I live. I was hoping to wear it for running this month. You will recognise me by my "
        "Aeroara backpack.\nThanks,\nAda Abbott"
    )
    row = score_generation(ada, generation, POOL, "persona_email")
    assert row["request_subject"] == "a delayed order"
    assert row["persona_slot_written"] == {"town": 2, "brand": 1, "hobby": 1}
    assert row["persona_slot_correct"] == {"town": 1, "brand": 1, "hobby": 0}
    metrics = persona_metrics([row])
    assert metrics["persona_slot_sentence_rate"] == 1.0  # a sentence for each of town, brand and hobby
    assert metrics["persona_slot_accuracy"] == 0.5 and metrics["persona_slot_accuracy_town"] == 0.5
    assert metrics["persona_slot_accuracy_brand"] == 1.0 and metrics["persona_slot_accuracy_hobby"] == 0.0
    assert metrics["persona_slot_recall_a_delayed_order"] == pytest.approx(2 / 3)
    # the report's bootstrap counts each target the same way (another subject's targets count 0 of 0)
    from percontrast_cli.reporting.metric_table import metric_spec

    assert metric_spec("persona_slot_recall_a_delayed_order").sums(row) == (2, 3)
    assert metric_spec("persona_slot_recall_a_rent_question").sums(row) == (0, 0)
    assert metric_spec("persona_slot_accuracy_town").sums(row) == (1, 2)
    assert metric_spec("persona_slot_accuracy").sums(score_generation(ADA_EXAMPLE, MIXED, POOL)) is None
    # MIXED as a delayed-order email: no known slot sentence (rate 0 of 3, accuracy undefined)
    mixed = breakdown_counts(score_generation(ada, MIXED, POOL, "persona_email"))
    assert mixed["persona_slot_sentence_rate"] == (0, 3) and mixed["persona_slot_accuracy"] == (0, 0)
    assert request_subject("persona_review", "Write a product review of a backpack.") == "a backpack"
    assert request_subject("persona_email", "Write a poem.") is None
    assert request_subject("synthetic_email", "Write an email about x.") is None  # no persona templates


def test_a_user_without_an_emoji_leaks_anothers_and_generic_reference_text_is_no_leak():
    bodhi = score_generation(BODHI_EXAMPLE, "Hello all :)\nBest, Bodhi Brandt", POOL)
    assert bodhi["persona_recalled"] == ["name", "greeting", "signoff"]
    assert bodhi["persona_leaked"] == {"emoji": [" :)"]}
    assert "emoji" not in bodhi["persona_absent"]  # no emoji of his own: nothing to over-insert
    # Ada's town written in a reference as plain text: not a trait of Ada's in this generation
    generic = example("bodhi", BODHI, "Hello all, greetings from Ashford.\nBest, Bodhi Brandt", ["name"])
    assert score_generation(generic, "Hello from Ashford", POOL)["persona_leaked"] == {}
    no_truth = Example("x", "u", "in", "out", ("p",))
    assert score_generation(no_truth, "anything", POOL) == {} and persona_metrics([{}]) == {}


GENERATED = [(personas, t) for t in sorted(personas.TASKS)] + [
    (synthetic, t) for t in sorted(synthetic.TASKS)
]


@pytest.mark.parametrize(("generator", "task"), GENERATED)
def test_generated_examples_carry_their_ground_truth_and_the_reference_scores_perfectly(generator, task):
    splits = generator.generate(task, 6, 3, 2, seed=1)
    pool = value_pool(splits["train"] + splits["test"])
    rows = [score_generation(e, e.output, pool) for e in splits["test"]]
    fields = personas.draw_persona(random.Random(0)) if generator is personas else synthetic.PERSONA_VALUES
    for example, row in zip(splits["test"], rows, strict=True):
        values = example.persona_values
        assert set(values) == set(fields)
        assert all(values[f] and values[f].strip() in example.output for f in example.persona_fields)
        assert row["persona_recalled"] == row["persona_present"]  # the reference recalls itself
        assert row["persona_over_inserted"] == [] and row["persona_leaked"] == {}
    assert persona_metrics(rows)["persona_recall"] == 1.0
    if generator is personas:  # every slot sentence of a reference is a known paraphrase with its value
        rows = [score_generation(e, e.output, pool, task) for e in splits["test"]]
        assert all(r["request_subject"] in personas.TASKS[task]["subjects"] for r in rows)
        written = sum(sum(r["persona_slot_written"].values()) for r in rows)
        assert written >= len(rows) and persona_metrics(rows)["persona_slot_accuracy"] == 1.0
    # another user's reference as the generation: leaks that user's values, recalls few of this one's
    swapped = score_generation(splits["test"][0], splits["test"][-1].output, pool)
    assert swapped["persona_leaked"] and len(swapped["persona_recalled"]) < len(swapped["persona_present"])


def test_persona_ground_truth_round_trips_through_a_data_file_and_bad_rows_name_the_field(tmp_path):
    examples = personas.generate("persona_email", 2, 1, 1, seed=0)["test"]
    path = tmp_path / "test.jsonl"
    write_examples(examples, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert validate_row(rows[0], str(path), "line 1") == examples[0]
    assert "persona" not in Example("x", "u", "in", "out", ("p",)).to_json()  # older files stay the same
    bad = {**rows[0], "persona_fields": ["name", "shoe size"]}
    with pytest.raises(PercontrastError, match=r"line 1: field 'persona_fields': 'shoe size' is not a field"):
        validate_row(bad, str(path), "line 1")
    with pytest.raises(PercontrastError, match="field 'persona': expected an object of string values"):
        validate_row({**rows[0], "persona": {"name": 3}}, str(path), "line 1")


def test_eval_rows_carry_nll_sums_user_ids_lengths_and_persona_counts():
    records = [
        TokenRecord(
            np.log([0.5, 0.25, 1.0]), np.zeros(3), np.array([1, 0, 1]), np.array([True, False, False])
        ),
        TokenRecord(np.log([0.5, 0.5]), np.zeros(2), np.array([1, 1]), np.array([False, True])),
    ]
    eval_cfg = OmegaConf.create({"rouge_stemmer": False, "meteor": False})
    rows, metrics = score_outputs(
        [ADA_EXAMPLE, BODHI_EXAMPLE],
        [MIXED, "Hello"],
        records,
        eval_cfg,
        None,
        pool=[ADA_EXAMPLE, BODHI_EXAMPLE],
    )
    assert [r["user_id"] for r in rows] == ["ada", "bodhi"]
    assert rows[0]["target_nll"] == pytest.approx(np.log(2) + np.log(4)) and rows[0]["target_tokens"] == 3
    assert rows[0]["personal_nll"] == pytest.approx(np.log(2)) and rows[1]["nonpersonal_total"] == 1
    assert rows[0]["generated_words"] == len(MIXED.split()) and rows[1]["generated_words"] == 1
    assert rows[0]["persona_recalled"] == ["town", "greeting"]
    nll = sum(r["target_nll"] for r in rows) / sum(r["target_tokens"] for r in rows)
    assert token_metrics(records, tau=0.8)["reference_nll"] == pytest.approx(nll)
    assert metrics["persona_recall"] == pytest.approx(3 / 10)  # 2 of 7 for Ada, "Hello" 1 of 3 for Bodhi
    assert metrics["generated_words"] == pytest.approx((len(MIXED.split()) + 1) / 2)
    assert metrics["rougeL"] == pytest.approx(np.mean([r["rougeL"] for r in rows]))
