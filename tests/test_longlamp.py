"""LongLaMP tasks: loading through one path, retrieval, prompts, truncation, metrics."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from percontrast_cli import pipeline
from percontrast_cli.data import sources
from percontrast_cli.data.encode import IGNORE, encode_example
from percontrast_cli.data.prompts import counterfactual_prompt, factual_prompt
from percontrast_cli.data.retrieval import top_k
from percontrast_cli.data.schema import Example
from percontrast_cli.errors import PercontrastError
from percontrast_cli.metrics import meteor, rouge

FIXTURES = Path(__file__).parent / "fixtures" / "longlamp"
TASKS = {"review": "reviewerId", "abstract": "name", "topic": "author", "email": "user_id"}


def config(*overrides):
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("task", list(TASKS))
def test_each_task_loads_its_fixture(task):
    cfg = config(f"task={task}", f"data.path={FIXTURES / f'{task}.jsonl'}")
    data = pipeline.load_task(cfg)
    assert len(data.train) + len(data.test) == 6
    assert {e.user_id for e in data.train}.isdisjoint({e.user_id for e in data.test})
    raw = json.loads((FIXTURES / f"{task}.jsonl").read_text().splitlines()[0])
    first = next(e for e in data.train + data.test if e.input == raw["input"])
    assert first.user_id == str(raw[TASKS[task]]) and first.output == raw["output"]
    assert len(first.profile) == 2 and all(p.strip() for p in first.profile)


@pytest.mark.parametrize("task", ["review", "abstract", "topic"])
def test_hub_rows_go_through_the_same_mapping(task, monkeypatch):
    """A hub load (datasets.load_dataset, stubbed offline with the fixture's rows) gives the same examples."""
    import datasets

    rows = [json.loads(line) for line in (FIXTURES / f"{task}.jsonl").read_text().splitlines()]
    calls = []

    def fake_load_dataset(name, config_name, split):
        calls.append((name, config_name, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = config(f"task={task}", "task.split_style=temporal")
    data = pipeline.load_task(cfg)
    assert calls[0][0] == "LongLaMP/LongLaMP" and calls[0][1].endswith("_temporal") and calls[0][2] == "train"
    from_file = sources.to_examples(
        sources.file_rows(FIXTURES / f"{task}.jsonl"), TASKS[task], cfg.task.profile_template
    )
    assert [(e.input, e.output, e.profile) for e in data.train] == [
        (e.input, e.output, e.profile) for e in from_file
    ]


def test_email_is_local_only_and_says_so():
    with pytest.raises(PercontrastError, match="task=email is not public: pass its data with data.path"):
        from percontrast_cli.validation import validate_config

        validate_config(config("task=email"))


def test_schema_errors_name_file_row_and_field(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "review.jsonl").read_text().splitlines()]
    rows[3]["output"] = ""
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config("task=review", f"data.path={bad}")
    with pytest.raises(
        PercontrastError, match=rf"{bad}: line 4: field 'output': expected a non-empty string"
    ):
        pipeline.load_task(cfg)
    rows[3]["output"] = "fine"
    del rows[4]["profile"]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(PercontrastError, match=r"line 5: field 'profile': missing"):
        pipeline.load_task(cfg)


def test_bm25_picks_the_relevant_profile_item():
    docs = (
        "My sourdough starter needs feeding twice a day.",
        "The carburetor of my motorbike leaks fuel.",
        "Tomatoes and basil grow well on my balcony.",
    )
    assert top_k("How do I fix a leaking motorbike carburetor?", docs, 1) == (docs[1],)
    assert top_k("anything", docs, 0) == ()


def example():
    return Example(
        "e1", "u1", "Write about bikes.", "Bikes are fun.", ("I repair old bikes.", "I bake bread.")
    )


def test_k0_prompt_has_no_profile_and_equals_the_counterfactual():
    ex = example()
    assert not any(doc in factual_prompt(ex, 0) for doc in ex.profile)
    assert "User profile" not in factual_prompt(ex, 0)
    assert counterfactual_prompt(ex, 2, "drop", []) == factual_prompt(ex, 0)
    assert all(doc in factual_prompt(ex, 2) for doc in ex.profile)


def test_truncation_keeps_the_whole_target_and_drops_least_relevant_items(tokenizer):
    docs = tuple(f"Profile note {i} about bikes and wheels and gears and chains." for i in range(12))
    ex = Example("e1", "u1", "Write about bikes and wheels.", "Bikes are fun to ride in the sun.", docs)
    full = encode_example(tokenizer, ex, k=12, max_length=4096, counterfactual=None, pool=[])
    short = encode_example(
        tokenizer, ex, k=12, max_length=len(full["input_ids"]) - 20, counterfactual=None, pool=[]
    )
    target = [x for x in full["labels"] if x != IGNORE]
    assert [x for x in short["labels"] if x != IGNORE] == target  # target intact
    prompt = tokenizer.decode(short["input_ids"][: len(short["input_ids"]) - len(target)])
    assert prompt.endswith("Request: Write about bikes and wheels.\nResponse:\n")  # request intact
    ranked = top_k(ex.input, docs, 12)
    kept = [d for d in ranked if d in prompt]
    assert kept == list(ranked[: len(kept)]) and 0 < len(kept) < 12  # most relevant items kept, in order


def test_rouge_and_meteor_match_hand_checked_values():
    scores = rouge(["the cats sat"], ["the cat sat on the mat"])
    # stemming makes "cats" match "cat": 3 of 3 predicted and 3 of 6 reference unigrams -> F1 = 2/3
    assert scores["rouge1"] == pytest.approx(2 / 3) and scores["rougeL"] == pytest.approx(2 / 3)
    # identical 5-word sentence: F-mean 1, one chunk -> penalty 0.5 * (1/5)^3
    assert meteor(["the dog was sick today"], ["the dog was sick today"]) == pytest.approx(1 - 0.5 * 0.2**3)
    # "ill" matches "sick" only through WordNet synonyms: 5 matches in one chunk again
    assert meteor(["the dog was ill today"], ["the dog was sick today"]) == pytest.approx(1 - 0.5 * 0.2**3)
    # a non-synonym: 4 matches in 2 chunks -> 0.8 * (1 - 0.5 * (2/4)^3)
    assert meteor(["the dog was red today"], ["the dog was sick today"]) == pytest.approx(
        0.8 * (1 - 0.5 * 0.125)
    )


def test_missing_wordnet_names_the_fix(monkeypatch):
    from percontrast_cli import metrics

    monkeypatch.setattr(metrics, "find_wordnet_dir", lambda: None)
    metrics.wordnet.cache_clear()
    try:
        with pytest.raises(PercontrastError, match="apt-get install wordnet-base"):
            metrics.meteor(["a"], ["a"])
    finally:
        metrics.wordnet.cache_clear()


@pytest.mark.slow
def test_run_review_from_a_local_file(tmp_path):
    from .test_end_to_end import artifact_ids, cli

    root = tmp_path / "out"
    out = cli(
        "run",
        "task=review",
        f"data.path={FIXTURES / 'review.jsonl'}",
        "experiment=miniature",
        root=root,
        cwd=tmp_path,
    )
    (eval_id,) = artifact_ids(root, "eval")
    metrics = json.loads((root / "artifacts" / "eval" / eval_id / "metrics.json").read_text())
    assert {"rouge1", "rougeL", "meteor"} <= set(metrics) and "meteor" in out
