"""The persona task family: deterministic, shared users across tasks, mostly unseen persona values at test
time, exact personal spans, personal tokens a minority."""

import hashlib
import json
import random
from pathlib import Path

import pytest

from percontrast_cli.data import personas, synthetic
from percontrast_cli.data.encode import encode_target
from percontrast_cli.data.synthetic import render
from percontrast_cli.modeling.tiny import train_tokenizer

TASKS = sorted(personas.TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_generator_is_deterministic_given_its_seed(task):
    a = personas.generate(task, 6, 3, 2, seed=4)
    assert a == personas.generate(task, 6, 3, 2, seed=4)
    assert a != personas.generate(task, 6, 3, 2, seed=5)
    assert len(a["train"]) == 12 and len(a["test"]) == 6
    assert {e.user_id for e in a["train"]}.isdisjoint({e.user_id for e in a["test"]})


def test_tasks_share_users_and_profiles_but_not_targets():
    by_task = {t: personas.generate(t, 5, 2, 1, seed=0) for t in TASKS}
    for split in ("train", "test"):
        users = {t: [(e.user_id, e.profile) for e in by_task[t][split]] for t in TASKS}
        assert users["persona_email"] == users["persona_review"] == users["persona_topic"]
    outputs = {t: by_task[t]["train"][0].output for t in TASKS}
    assert len(set(outputs.values())) == 3


def test_test_users_persona_values_are_mostly_unseen_in_training():
    users = personas.draw_users(240, 30, seed=0)  # the persona tasks' default sizes
    train = [u for u in users if u.split == "train"]
    test = [u for u in users if u.split == "test"]
    unseen = [
        u.persona[attr] not in {t.persona[attr] for t in train}
        for u in test
        for attr in personas.OPEN_ATTRIBUTES
    ]
    share = sum(unseen) / len(unseen)
    assert share >= 0.6, share
    # and the profile reveals each of them, so a model can copy them
    for user in test:
        text = " ".join(user.profile)
        assert all(user.persona[attr] in text for attr in personas.OPEN_ATTRIBUTES)


def distinct_personas(rng: random.Random) -> tuple[dict, dict]:
    """Two personas that differ in every attribute (a non-empty emoji each)."""
    while True:
        a, b = personas.draw_persona(rng), personas.draw_persona(rng)
        if a["emoji"] and b["emoji"] and all(a[k] != b[k] for k in a):
            return a, b


@pytest.mark.parametrize("task", TASKS)
def test_personal_spans_cover_exactly_the_persona_dependent_characters(task):
    rng = random.Random(0)
    for _ in range(50):
        _, template = personas.target_template(personas.TASKS[task], rng)
        first, second = distinct_personas(rng)
        (text_a, spans_a), (text_b, spans_b) = render(template, first), render(template, second)

        def outside(text, spans):
            pieces, cursor = [], 0
            for start, end in spans:
                pieces.append(text[cursor:start])
                cursor = end
            return pieces + [text[cursor:]]

        # Every character outside the spans is the same under another persona...
        assert outside(text_a, spans_a) == outside(text_b, spans_b)
        # ...and every character inside a span is a persona value (so it changes with the persona).
        values_a = [text_a[s:e] for s, e in spans_a]
        values_b = [text_b[s:e] for s, e in spans_b]
        assert all(v in first.values() for v in values_a)
        assert all(v in second.values() for v in values_b)
        assert all(va != vb for va, vb in zip(values_a, values_b, strict=True))


@pytest.mark.parametrize("task", TASKS)
def test_personal_tokens_are_a_minority_and_revealed_by_the_profile(task):
    splits = personas.generate(task, 40, 0, 2, seed=0)
    examples = splits["train"]
    for example in examples:
        profile = " ".join(example.profile)
        assert all(example.output[a:b].strip() in profile for a, b in example.personal_spans)
    tokenizer = train_tokenizer([t for e in examples for t in (e.input, e.output, *e.profile)], 1024)
    personal = [p for e in examples for p in encode_target(tokenizer, e, 512).personal]
    assert 0.05 < sum(personal) / len(personal) < 0.2


def core_fingerprint(splits: dict) -> str:
    """A hash of what the generators produce (ids, users, request, target, profile, spans), split by split:
    fields added to Example later do not move it, a changed draw or text does."""
    rows = {
        split: [
            [e.id, e.user_id, e.input, e.output, list(e.profile), [list(s) for s in e.personal_spans]]
            for e in examples
        ]
        for split, examples in splits.items()
    }
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()[:16]


# Recorded with the generators as they were before the shared example loop and the move of the persona pools
# to persona_pools.json (main at 2bf03aa): the same seed must keep giving the same examples, byte for byte.
GENERATED = {
    ("synthetic_email", 0): "1af9c66455abc14a",
    ("synthetic_email", 3): "6bef8c411666e840",
    ("synthetic_review", 0): "a43f590e70b3d612",
    ("synthetic_review", 3): "b74f96adebd8f027",
    ("persona_email", 0): "b41bc966d67e6a4a",
    ("persona_email", 3): "673c8be4e995f1e3",
    ("persona_review", 0): "2c43786945adec37",
    ("persona_review", 3): "ef48af22e930c12f",
    ("persona_topic", 0): "4c18a6457d297478",
    ("persona_topic", 3): "8353f13179de38be",
}


@pytest.mark.parametrize("task, seed", list(GENERATED))
def test_generated_data_is_unchanged_at_the_tasks_default_sizes(task, seed):
    if task in personas.TASKS:
        splits = personas.generate(task, 240, 30, 2, seed)
    else:
        splits = synthetic.generate(task, 200, 25, 4, seed)
    assert core_fingerprint(splits) == GENERATED[task, seed]


def test_persona_pools_are_package_data():
    """The pools live in a JSON file inside the package (pyproject's package-data ships it)."""
    from importlib.resources import files

    pools = json.loads(files("percontrast_cli.data").joinpath("persona_pools.json").read_text("utf-8"))
    assert set(pools["tasks"]) == set(personas.TASKS) and pools["first_names"] == personas.FIRST_NAMES
    assert '"data/*.json"' in (Path(__file__).parents[1] / "pyproject.toml").read_text()
