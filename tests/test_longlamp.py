"""LongLaMP tasks: loading through one path, retrieval, prompts, truncation, metrics."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from percontrast_cli.data import sources
from percontrast_cli.data.encode import IGNORE, encode_example
from percontrast_cli.data.prompts import PromptFormat, build_prompt, counterfactual_prompt, factual_prompt
from percontrast_cli.data.retrieval import Retriever, top_k
from percontrast_cli.data.schema import Example, RowSchema
from percontrast_cli.errors import PercontrastError
from percontrast_cli.metrics import meteor, rouge, text_metrics
from percontrast_cli.steps import task_data

FIXTURES = Path(__file__).parent / "fixtures" / "longlamp"
TASKS = {"review": "reviewerId", "abstract": "name", "topic": "author", "email": "user_id"}


def config(*overrides):
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("task", list(TASKS))
def test_each_task_loads_its_fixture(task):
    cfg = config(f"task={task}", f"data.path={FIXTURES / f'{task}.jsonl'}")
    data = task_data.load_task(cfg)
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
        return rows  # the mapping only iterates over the rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = config(f"task={task}", "task.split_style=temporal")
    data = task_data.load_task(cfg)
    assert calls[0][0] == "LongLaMP/LongLaMP" and calls[0][1].endswith("_temporal") and calls[0][2] == "train"
    from_file = sources.to_examples(
        sources.file_rows(FIXTURES / f"{task}.jsonl"), RowSchema.from_task(cfg.task, "longlamp")
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
        task_data.load_task(cfg)
    rows[3]["output"] = "fine"
    del rows[4]["profile"]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(PercontrastError, match=r"line 5: field 'profile': missing"):
        task_data.load_task(cfg)


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
    # no stemming (the official evaluator): "cats" does not match "cat": 2 of 3 and 2 of 6 -> F1 = 4/9
    scores = rouge(["the cats sat"], ["the cat sat on the mat"])
    assert scores["rouge1"] == pytest.approx(4 / 9) and scores["rougeL"] == pytest.approx(4 / 9)
    # eval.rouge_stemmer=true: stemming makes "cats" match "cat": 3 of 3 and 3 of 6 -> F1 = 2/3
    stemmed = rouge(["the cats sat"], ["the cat sat on the mat"], stemmer=True)
    assert stemmed["rouge1"] == pytest.approx(2 / 3) and stemmed["rougeL"] == pytest.approx(2 / 3)
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
@pytest.mark.parametrize("task", ["review", "abstract", "topic"])
def test_run_from_a_split_directory(tmp_path, task):
    from .test_end_to_end import artifact_ids, cli

    root = tmp_path / "out"
    out = cli(
        "run", f"task={task}", f"data.path={FIXTURES / task}", "experiment=miniature", root=root, cwd=tmp_path
    )
    (eval_id,) = artifact_ids(root, "eval")
    manifest = json.loads((root / "artifacts" / "eval" / eval_id / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert {"rouge1", "rougeL", "meteor", "empty_generations"} <= set(metrics) and "meteor" in out
    assert manifest["run_config"]["prompt"]["style"] == "longlamp"
    predictions = (root / "artifacts" / "eval" / eval_id / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(p)["id"] for p in predictions] == ["test-1", "test-2"]  # the test split's rows


def test_split_directory_reads_train_val_and_test():
    test_split = task_data.load_task(config("task=review", f"data.path={FIXTURES / 'review'}"))
    val_split = task_data.load_task(
        config("task=review", f"data.path={FIXTURES / 'review'}", "eval.split=val")
    )
    assert len(test_split.train) == 8 and len(test_split.test) == 2 and len(val_split.test) == 2
    assert {e.user_id for e in test_split.test} != {e.user_id for e in val_split.test}
    assert val_split.train == test_split.train


def test_users_shared_across_split_files_are_rejected(tmp_path):
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.jsonl").write_text((FIXTURES / "review" / f"{split}.jsonl").read_text())
    leaked = (FIXTURES / "review" / "train.jsonl").read_text().splitlines()[0]
    with open(tmp_path / "test.jsonl", "a") as f:
        f.write(leaked + "\n")
    user = json.loads(leaked)["reviewerId"]
    with pytest.raises(PercontrastError, match=f"user '{user}' is in both the train and the test split"):
        task_data.load_task(config("task=review", f"data.path={tmp_path}"))
    # split_style=temporal: the same users' later documents, so shared users are expected
    task_data.load_task(config("task=review", f"data.path={tmp_path}", "task.split_style=temporal"))


REVIEW_ITEMS = [
    {"overall": 5.0, "summary": "Love it", "reviewText": "Best pan ever.", "description": "A cast iron pan"},
    {"overall": "3", "summary": "Fine", "reviewText": "It works.", "description": "A kettle"},
    {"overall": 1.0, "summary": "Broke", "reviewText": "Snapped.", "description": "A ladder"},
]
ABSTRACT_ITEMS = [
    {"title": "graph routing", "abstract": "we route graphs .", "id": "p1", "year": 2019},
    {"title": "deep nets", "abstract": "nets are deep .", "id": "p2", "year": "2020"},
    {"title": "sensors", "abstract": "sensing things .", "id": "p3", "year": 2021},
]
TOPIC_ITEMS = [
    {"summary": "cat pic", "content": "Look at my cat.", "author": "u_a", "id": "t1"},
    {"summary": "dog pic", "content": "Look at my dog.", "author": "u_a", "id": "t2"},
    {"summary": "bird pic", "content": "Look at my bird.", "author": "u_a", "id": "t3"},
]
EMAIL_ITEMS = [
    {"title": "Lunch", "text": "See you at noon."},
    {"title": "Invoice", "text": "Attached."},
    {"title": "Trip", "text": "Bags packed."},
]
OFFICIAL_PROMPTS = {
    "review": (
        REVIEW_ITEMS,
        '"5.0" is a rating for the product with description "A cast iron pan". "Love it" is summary for '
        '"Best pan ever."',
        ', and "3" is a rating for the product with description "A kettle". "Fine" is summary for "It works."'
        ', and "1.0" is a rating for the product with description "A ladder". "Broke" is summary for '
        '"Snapped."',
        ". Following the given patterns REQUEST",
    ),
    "abstract": (
        ABSTRACT_ITEMS,
        '"we route graphs ." is the abstract for the title "graph routing"',
        ', and "nets are deep ." is the abstract for the title "deep nets", and "sensing things ." is the '
        'abstract for the title "sensors"',
        ". Use the above abstracts as context to understand the style and language of the user and, REQUEST",
    ),
    "topic": (
        TOPIC_ITEMS,
        '"cat pic" is a summary for "Look at my cat."',
        ', and "dog pic" is a summary for "Look at my dog.", and "bird pic" is a summary for '
        '"Look at my bird."',
        ". Following the given patterns, REQUEST",
    ),
    "email": (
        EMAIL_ITEMS,
        '"Lunch" is the title for "See you at noon."',
        ', and "Invoice" is the title for "Attached.", and "Trip" is the title for "Bags packed."',
        ". REQUEST",
    ),
}


@pytest.mark.parametrize("task", list(OFFICIAL_PROMPTS))
def test_official_prompt_for_one_and_three_items(task):
    items, first, rest, tail = OFFICIAL_PROMPTS[task]
    cfg = config(f"task={task}", f"data.path={FIXTURES / task}")
    row = {TASKS[task]: "u1", "input": "REQUEST", "output": "target", "profile": items}
    example = sources.validate_row(row, "x.jsonl", "line 1", RowSchema.from_task(cfg.task, "longlamp"))
    fmt = PromptFormat.from_config(cfg)
    assert build_prompt(example.input, list(example.profile[:1]), fmt) == first + tail
    assert build_prompt(example.input, list(example.profile), fmt) == first + rest + tail
    # the drop counterfactual: the same prompt with no items (the connector and the input remain)
    assert counterfactual_prompt(example, 3, "drop", [], fmt) == tail == factual_prompt(example, 0, fmt)


def test_abstracts_are_cut_to_750_words_in_the_prompt():
    cfg = config("task=abstract", f"data.path={FIXTURES / 'abstract'}")
    long_item = {"title": "t", "abstract": " ".join(f"w{i}" for i in range(800)), "id": "p", "year": 2000}
    row = {"name": "u", "input": "x items: a", "output": "y", "profile": [long_item]}
    example = sources.validate_row(row, "x.jsonl", "line 1", RowSchema.from_task(cfg.task, "longlamp"))
    assert (
        example.profile[0]
        == '"' + " ".join(f"w{i}" for i in range(750)) + '" is the abstract for the title "t"'
    )


def test_bm25_uses_whitespace_tokens_with_case_kept():
    # lowercased, "Apple" would match item 0's "apple" (three times) first; case kept, only item 1 matches
    docs = ("apple apple apple pie", "Apple Inc. shares", "banana bread")
    official = Retriever("bm25", "whitespace")
    assert official.top_k("Apple", docs, 2)[0] == 1
    assert Retriever("bm25", "words").top_k("Apple", docs, 1) == [0]


def test_abstract_query_is_the_text_after_items_and_review_query_the_input():
    cfg = config("task=abstract", f"data.path={FIXTURES / 'abstract'}")
    data = task_data.load_task(cfg)
    first = data.train[0]
    assert first.input.startswith("Generate an abstract for the title")
    assert first.query == first.input.split("items:", 1)[1].strip() and "title" not in first.query
    review = task_data.load_task(config("task=review", f"data.path={FIXTURES / 'review'}")).train[0]
    assert review.query == review.input
    # the corpus text of each item is the official field order, not the prompt sentence
    assert review.corpus[0].startswith("4.0 Solid ") and "is a rating" not in review.corpus[0]


def test_none_fields_are_never_rendered():
    data = task_data.load_task(config("task=review", f"data.path={FIXTURES / 'review'}"))
    for example in data.train + data.test:
        assert all("None" not in item for item in example.profile + example.corpus)
    # the item with summary None falls back to its own text fields
    assert any(item.startswith("2.0 The kettle broke") for item in data.train[0].profile)


def test_recency_and_random_retrieval():
    docs = ("oldest", "middle", "newest")
    assert Retriever("recency").top_k("q", docs, 2) == [2, 1]
    picks = Retriever("random").top_k("q", docs, 2, seed_key="e1")
    assert picks == Retriever("random").top_k("q", docs, 2, seed_key="e1") and len(set(picks)) == 2


def test_contriever_ranks_by_mean_pooled_dot_product(tmp_path, tokenizer):
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    bert = BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    )
    bert.save_pretrained(tmp_path / "enc")
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer, pad_token="<|pad|>"
    ).save_pretrained(tmp_path / "enc")
    retriever = Retriever("contriever", model=str(tmp_path / "enc"))
    docs = ("the first item", "another one", "a third")
    order = retriever.top_k("the first item", docs, 3)
    vectors = retriever.dense.embed(list(docs))
    query = retriever.dense.embed(["the first item"])[0]
    assert order == sorted(range(3), key=lambda i: -float(vectors[i] @ query))
    assert set(retriever.dense.cache) == {*docs}  # embeddings cached by text


def test_contriever_missing_offline_fails_before_work(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = config(
        "task=review",
        f"data.path={FIXTURES / 'review'}",
        "retrieval.method=contriever",
        f"retrieval.model={tmp_path / 'nothing-here'}",
    )
    task_data._retriever.cache_clear()
    with pytest.raises(PercontrastError, match="retrieval.model=DIR, or use retrieval.method=bm25"):
        task_data.load_task(cfg)


def test_text_metrics_count_empty_generations_and_drop_them_in_the_official_variant():
    metrics = text_metrics(["the cat sat", ""], ["the cat sat", "a dog"], with_meteor=False)
    assert metrics["empty_generations"] == 1
    assert metrics["rougeL"] == pytest.approx(0.5) and metrics["rougeL_drop_empty"] == pytest.approx(1.0)


def test_rouge_l_equals_rouge_score_without_stemmer():
    from rouge_score import rouge_scorer

    pairs = [("The cats were running home.", "The cat runs home quickly."), ("A B C", "c b a"), ("x", "y z")]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = sum(scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in pairs) / len(pairs)
    assert rouge([p for p, _ in pairs], [r for _, r in pairs])["rougeL"] == pytest.approx(expected)


def test_meteor_is_evaluates_meteor_with_its_parameters():
    from nltk.translate.meteor_score import single_meteor_score

    from percontrast_cli.metrics import METEOR_PARAMS, word_tokens, wordnet

    assert METEOR_PARAMS == {"alpha": 0.9, "beta": 3.0, "gamma": 0.5}
    pred, ref = "He didn't come. The dog was ill!", "He did not come. The dog was sick."
    assert word_tokens(pred) == ["He", "did", "n't", "come", ".", "The", "dog", "was", "ill", "!"]
    expected = single_meteor_score(
        word_tokens(ref), word_tokens(pred), alpha=0.9, beta=3, gamma=0.5, wordnet=wordnet()
    )
    assert meteor([pred], [ref]) == pytest.approx(expected)
    default = single_meteor_score(
        word_tokens(ref), word_tokens(pred), alpha=0.9, beta=3, gamma=0.1, wordnet=wordnet()
    )
    assert expected != pytest.approx(default)  # the parameters matter


def test_cut_targets_carry_no_end_token(tokenizer):
    long = Example("e", "u", "req", " ".join(["word"] * 300), ("item",))
    item = encode_example(tokenizer, long, k=1, max_length=64, counterfactual=None, pool=[])
    labels = [x for x in item["labels"] if x != IGNORE]
    assert item["cut"] and labels[-1] != tokenizer.eos_token_id and len(item["input_ids"]) <= 64
    short = encode_example(tokenizer, example(), k=1, max_length=256, counterfactual=None, pool=[])
    assert not short["cut"] and [x for x in short["labels"] if x != IGNORE][-1] == tokenizer.eos_token_id


def test_paper_preset_composes_and_validates():
    from percontrast_cli.validation import validate_config

    cfg = config("experiment=paper")
    validate_config(cfg)
    assert cfg.model.name_or_path == "Qwen/Qwen3-4B" and cfg.train.peft == "none" and cfg.train.epochs == 3
    assert cfg.train.batch_size * cfg.train.grad_accum == 32 and cfg.train.lr == 2e-5
    assert cfg.model.max_length == 5000 and cfg.retrieval.method == "contriever" and cfg.retrieval.k == 4
    assert cfg.eval.do_sample and cfg.eval.temperature == 0.4 and cfg.eval.max_new_tokens == 512
    assert cfg.task.split_style == "user" and cfg.prompt.style == "longlamp"
