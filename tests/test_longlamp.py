"""LongLaMP tasks: loading through one path, retrieval, prompts (byte for byte the official code's),
truncation, metrics."""

import io
import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from percontrast_cli.data import sources
from percontrast_cli.data.encode import IGNORE, encode_example, shown_prompt
from percontrast_cli.data.prompts import PromptFormat, build_prompt
from percontrast_cli.data.retrieval import Retriever, tokens
from percontrast_cli.data.schema import Example, RowSchema
from percontrast_cli.evaluation.text_metrics import meteor, rouge_scores, text_metrics
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.steps import task_data

FIXTURES = Path(__file__).parent / "fixtures" / "longlamp"
TASKS = {"review": "reviewerId", "abstract": "name", "topic": "author", "email": "user_id"}
# The official code's prompts for the fixture rows (scripts/longlamp_official_prompts.py regenerates them from
# a checkout of LongLaMP-benchmark/LongLaMP-Benchmark).
OFFICIAL = json.loads((FIXTURES / "official_prompts.json").read_text())["prompts"]


def rouge(predictions, references, stemmer=False):
    return {name: float(v.mean()) for name, v in rouge_scores(predictions, references, stemmer).items()}


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
    assert len(first.profile) == 6 and all(p.strip() for p in first.profile)


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
        from percontrast_cli.cli.validation import validate_config

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
    bm25 = Retriever("bm25", "words")
    assert bm25.top_k("How do I fix a leaking motorbike carburetor?", docs, 1) == [1]
    assert bm25.top_k("anything", docs, 0) == []


def example():
    return Example(
        "e1", "u1", "Write about bikes.", "Bikes are fun.", ("I repair old bikes.", "I bake bread.")
    )


def prompt_text(tokenizer, item: dict, prefix: str = "") -> str:
    """The prompt an encoded item gives the model: its ids before the target's, decoded."""
    n_target = sum(1 for x in item[f"{prefix}labels"] if x != IGNORE)
    ids = item[f"{prefix}input_ids"]
    return tokenizer.decode(ids[: len(ids) - n_target], clean_up_tokenization_spaces=False)


def test_k0_prompt_has_no_profile_and_equals_the_counterfactual(tokenizer):
    ex = example()

    def encode(k, fmt=None):
        fmt = fmt or PromptFormat()
        return encode_example(tokenizer, ex, k=k, max_length=512, counterfactual="drop", pool=[], fmt=fmt)

    k0, k2 = encode(0), encode(2)
    assert prompt_text(tokenizer, k0) == "Request: Write about bikes.\nResponse:\n"  # no profile section
    assert k2["cf_input_ids"] == k0["input_ids"]  # the drop counterfactual is the k=0 sequence
    assert all(doc in prompt_text(tokenizer, k2) for doc in ex.profile)
    longlamp = PromptFormat("longlamp", ". Connector, ")
    assert prompt_text(tokenizer, encode(0, longlamp)) == ex.input  # official k=0: the bare input
    assert prompt_text(tokenizer, encode(2, longlamp), "cf_") == ex.input


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
    ranked = [docs[i] for i in Retriever("bm25", "words").top_k(ex.input, docs, 12)]
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
    from percontrast_cli.evaluation import text_metrics as metrics

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
        '"Best pan ever." ',
        ', and "3" is a rating for the product with description "A kettle". "Fine" is summary for '
        '"It works." , and "1.0" is a rating for the product with description "A ladder". '
        '"Broke" is summary for "Snapped." ',
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
        '"cat pic" is a summary for "Look at my cat." ',
        ', and "dog pic" is a summary for "Look at my dog." , and "bird pic" is a summary for '
        '"Look at my bird." ',
        ". Following the given patterns, REQUEST",
    ),
    "email": (
        EMAIL_ITEMS,
        '"Lunch" is the title for "See you at noon." ',
        ', and "Invoice" is the title for "Attached." , and "Trip" is the title for "Bags packed." ',
        ". REQUEST",
    ),
}


@pytest.mark.parametrize("task", list(OFFICIAL_PROMPTS))
def test_official_prompt_for_one_and_three_items(task, tokenizer):
    """Hand-written official prompts (the trailing space after review/topic/email sentences included)."""
    items, first, rest, tail = OFFICIAL_PROMPTS[task]
    cfg = config(f"task={task}", f"data.path={FIXTURES / task}")
    row = {TASKS[task]: "u1", "input": "REQUEST", "output": "target", "profile": items}
    example = sources.validate_row(row, "x.jsonl", "line 1", RowSchema.from_task(cfg.task, "longlamp"))
    fmt = PromptFormat.from_config(cfg)
    assert build_prompt(example.input, list(example.profile[:1]), fmt) == first + tail
    assert build_prompt(example.input, list(example.profile), fmt) == first + rest + tail
    # as encoded: with no profile the bare input (k=0, and the drop counterfactual); the empty-slot
    # counterfactual is the official prompt with zero items (the connector and the input)
    item = encode_example(tokenizer, example, k=3, max_length=512, counterfactual="drop", pool=[], fmt=fmt)
    assert prompt_text(tokenizer, item, "cf_") == "REQUEST"
    empty = encode_example(tokenizer, example, k=3, max_length=512, counterfactual="empty", pool=[], fmt=fmt)
    assert prompt_text(tokenizer, empty, "cf_") == tail


def test_abstracts_are_cut_to_750_words_in_the_prompt():
    cfg = config("task=abstract", f"data.path={FIXTURES / 'abstract'}")
    long_item = {"title": "t", "abstract": " ".join(f"w{i}" for i in range(800)), "id": "p", "year": 2000}
    spaced = {"title": "s", "abstract": "two  spaces\nand a line .", "id": "q", "year": 2000}
    row = {"name": "u", "input": "x items: a", "output": "y", "profile": [long_item, spaced]}
    example = sources.validate_row(row, "x.jsonl", "line 1", RowSchema.from_task(cfg.task, "longlamp"))
    assert (
        example.profile[0]
        == '"' + " ".join(f"w{i}" for i in range(750)) + '" is the abstract for the title "t"'
    )
    # shorter abstracts too: their words re-joined with single spaces, as the official cut does
    assert example.profile[1] == '"two spaces and a line ." is the abstract for the title "s"'


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


def test_null_fields_as_the_official_code_renders_them_and_never_in_the_plain_style():
    path = f"data.path={FIXTURES / 'review'}"
    official = task_data.load_task(config("task=review", path))
    ben = next(e for e in official.train if e.user_id.endswith("BEN"))
    # the longlamp style fills the template as the official f-string does: a null summary is "None"
    assert '"kettle". "None" is summary for "The kettle broke after a week." ' in ben.profile[1]
    assert ben.corpus[1] == "2.0 None kettle The kettle broke after a week."
    plain = task_data.load_task(config("task=review", path, "prompt.style=plain"))
    for example in plain.train + plain.test:
        assert all("None" not in item for item in example.profile + example.corpus)
    # there the item with summary None falls back to its own text fields
    assert any(item.startswith("2.0 The kettle broke") for e in plain.train for item in e.profile)


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


def test_whitespace_only_generations_are_kept_as_the_official_scorer_keeps_them():
    """The official scorer (longLaMP/metrics/generation_metrics.py, evaluate_data) keeps a pair when
    `d["generated_text"] and d["output"]`: a whitespace-only generation is kept (it scores 0 once stripped);
    only an empty string is dropped."""
    predictions, references = ["the cat sat", "  \n", ""], ["the cat sat", "a dog", "a bird"]
    metrics = text_metrics(predictions, references, with_meteor=False)
    kept = [p and r for p, r in zip(predictions, references, strict=True)]  # the official condition
    assert [bool(k) for k in kept] == [True, True, False]
    assert metrics["rougeL_drop_empty"] == pytest.approx(0.5)  # (1 + 0) / 2: the whitespace one counts
    assert metrics["empty_generations"] == 2  # blank generations, for the eye


def test_rouge_l_equals_rouge_score_without_stemmer():
    from rouge_score import rouge_scorer

    pairs = [("The cats were running home.", "The cat runs home quickly."), ("A B C", "c b a"), ("x", "y z")]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = sum(scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in pairs) / len(pairs)
    assert rouge([p for p, _ in pairs], [r for _, r in pairs])["rougeL"] == pytest.approx(expected)


def test_meteor_is_evaluates_meteor_with_its_parameters():
    from nltk.translate.meteor_score import single_meteor_score

    from percontrast_cli.evaluation.text_metrics import METEOR_PARAMS, word_tokens, wordnet

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
    from percontrast_cli.cli.validation import validate_config

    cfg = config("experiment=paper")
    validate_config(cfg)
    assert cfg.model.name_or_path == "Qwen/Qwen3-4B" and cfg.train.peft == "none" and cfg.train.epochs == 3
    assert cfg.train.batch_size * cfg.train.grad_accum == 32 and cfg.train.lr == 2e-5
    assert cfg.model.max_length == 5000 and cfg.retrieval.method == "contriever" and cfg.retrieval.k == 4
    assert cfg.eval.temperature == 0.4 and cfg.eval.max_new_tokens == 512
    assert cfg.task.split_style == "user" and cfg.prompt.style == "longlamp"


@cache
def fixture_split(task: str, split: str) -> list:
    """The examples of tests/fixtures/longlamp/<task>/<split>.jsonl, loaded as every stage loads them."""
    cfg = config(
        f"task={task}", f"data.path={FIXTURES / task}", f"eval.split={'val' if split == 'val' else 'test'}"
    )
    data = task_data.load_task(cfg)
    return data.train if split == "train" else data.test


@pytest.mark.parametrize("task", list(TASKS))
def test_prompts_are_the_official_codes_byte_for_byte(task, tokenizer):
    """Every fixture row, k = 0 (no profile), and BM25 and recency at k = 1, 4, 5: the prompt the production
    path gives the model equals the official functions' output (fixtures/longlamp/official_prompts.json)."""
    cfg = config(f"task={task}", f"data.path={FIXTURES / task}")
    fmt = PromptFormat.from_config(cfg)
    records = [r for r in OFFICIAL if r["file"].startswith(f"{task}/")]
    assert {(r["method"], r["k"]) for r in records} == {
        (None, 0),
        *((m, k) for m in ("bm25", "recency") for k in (1, 4, 5)),
    }
    assert len(records) == 12 * 7  # 12 rows (train, val, test) x 7 settings
    for record in records:
        split = record["file"].split("/")[1].removesuffix(".jsonl")
        example = fixture_split(task, split)[record["line"] - 1]
        retriever = Retriever(record["method"] or "bm25", cfg.retrieval.bm25_tokens)
        shown = shown_prompt(tokenizer, example, k=record["k"], max_length=8192, fmt=fmt, retriever=retriever)
        assert shown.text == record["prompt"], record
    # and shown_prompt is what encode_example encodes (the ids of the last record's prompt)
    item = encode_example(
        tokenizer, example, k=record["k"], max_length=8192, counterfactual=None, pool=[], fmt=fmt,
        retriever=retriever,
    )  # fmt: skip
    assert prompt_text(tokenizer, item) == shown.text and item["input_ids"][: len(shown.ids)] == shown.ids


def test_the_fixtures_exercise_bm25_ties():
    """Equal BM25 scores decide what k = 1, 4 and 5 show on these rows: the official order (the later item
    first) and the profile order pick differently on many of them, so the comparison above can fail."""
    differ = 0
    for record in OFFICIAL:
        if record["method"] != "bm25":
            continue
        task, split = record["file"].removesuffix(".jsonl").split("/")
        example = fixture_split(task, split)[record["line"] - 1]
        from rank_bm25 import BM25Okapi

        scores = BM25Okapi([tokens(t, "whitespace") for t in example.corpus]).get_scores(
            tokens(example.query, "whitespace")
        )
        earliest_first = sorted(range(len(scores)), key=lambda i: -scores[i])[: record["k"]]
        differ += earliest_first != list(np.argsort(scores)[::-1][: record["k"]])
    assert differ >= 90, differ  # 96 of the 144 BM25 prompts


def test_a_fixture_row_with_a_long_abstract_and_a_null_field_is_compared():
    prompts = [r["prompt"] for r in OFFICIAL]
    assert any(' w748 w749" is the abstract' in p for p in prompts)  # the 750-word cut
    assert any('"None" is summary for' in p for p in prompts)  # ben's null summary
    assert any("we route graphs over noisy links at scale ." in p for p in prompts)  # re-joined spaces


def test_inspect_show_prompt_writes_the_official_bytes_and_nothing_else(outputs, capfd):
    """The inspect stage itself (as `percontrast inspect inspect.show=prompt inspect.split=test example=1`
    runs it): stdout holds exactly the official prompt of that row."""
    from percontrast_cli.cli.stages import stage_inspect

    (record,) = [
        r for r in OFFICIAL
        if r["file"] == "review/test.jsonl" and r["line"] == 2 and r["method"] == "bm25" and r["k"] == 4
    ]  # fmt: skip
    cfg = config(
        "task=review", f"data.path={FIXTURES / 'review'}", "inspect.show=prompt", "inspect.split=test",
        "example=1", "retrieval.k=4",
    )  # fmt: skip
    capfd.readouterr()
    stage_inspect(cfg)
    out = capfd.readouterr().out
    assert out == record["prompt"]


@pytest.mark.parametrize("task", list(TASKS))
def test_write_prompt_for_every_test_row_and_setting(task, tokenizer):
    """inspect.show=prompt's writer, for each test-split row, k and retrieval method: the official bytes."""
    from percontrast_cli.data.show import write_prompt

    cfg = config(f"task={task}", f"data.path={FIXTURES / task}", "inspect.show=prompt", "inspect.split=test")
    for record in [r for r in OFFICIAL if r["file"] == f"{task}/test.jsonl"]:
        # as example=N retrieval.k=K retrieval.method=M on the command line
        cfg.example, cfg.retrieval.k = record["line"] - 1, record["k"]
        cfg.retrieval.method = record["method"] or "bm25"
        out = io.StringIO()
        write_prompt(
            cfg,
            tokenizer,
            fixture_split(task, "test"),
            Retriever(cfg.retrieval.method, cfg.retrieval.bm25_tokens),
            out,
        )
        assert out.getvalue() == record["prompt"]


def test_inspect_show_prompt_rejects_an_example_out_of_range(tokenizer):
    from percontrast_cli.data.show import write_prompt

    cfg = config("task=topic", f"data.path={FIXTURES / 'topic'}", "inspect.show=prompt", "example=9")
    with pytest.raises(PercontrastError, match="example=9 is out of range: the train split has 8 examples"):
        write_prompt(cfg, tokenizer, fixture_split("topic", "train"), Retriever(), io.StringIO())


@pytest.mark.slow
def test_cli_inspect_show_prompt_stdout_is_the_prompt(tmp_path):
    import os
    import subprocess
    import sys

    (record,) = [
        r for r in OFFICIAL
        if r["file"] == "abstract/test.jsonl" and r["line"] == 1 and r["method"] == "recency" and r["k"] == 5
    ]  # fmt: skip
    result = subprocess.run(
        [
            sys.executable, "-m", "percontrast_cli.cli", "inspect", "inspect.show=prompt",
            "inspect.split=test", "example=0", "task=abstract", f"data.path={FIXTURES / 'abstract'}",
            "retrieval.method=recency",
        ],
        capture_output=True, cwd=tmp_path, env={**os.environ, "PERCONTRAST_OUTPUTS": str(tmp_path / "out")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout == record["prompt"].encode()


def test_encoded_prompt_is_the_shown_prompt_in_the_chat_template_after_truncation(tokenizer):
    """What the model reads (encode_example's ids, decoded) is the shown prompt's text in the chat template,
    with the least relevant items dropped to fit; inspect.show=prompt prints that text."""
    import copy

    chat = copy.deepcopy(tokenizer)
    chat.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    example = fixture_split("topic", "test")[0]
    cfg = config("task=topic", f"data.path={FIXTURES / 'topic'}")
    fmt, bm25 = PromptFormat.from_config(cfg), Retriever("bm25", "whitespace")
    settings = dict(k=5, chat=True, fmt=fmt, retriever=bm25)
    full = shown_prompt(chat, example, max_length=4096, **settings)
    assert full.text.count('" is a summary for "') == 5
    short = shown_prompt(chat, example, max_length=len(full.ids) + 10, **settings)  # + the target: too long
    assert 0 < short.text.count('" is a summary for "') < 5 and short.cut_tokens == 0
    item = encode_example(
        chat, example, max_length=len(full.ids) + 10, counterfactual=None, pool=[], **settings
    )
    assert prompt_text(chat, item) == f"<|user|>{short.text}\n<|assistant|>"
    # the items kept are the most relevant ones, in order: the full prompt begins with them
    assert full.text.startswith(short.text.split(fmt.connector)[0])


def test_inspect_show_prompt_takes_a_checkpoints_settings(outputs, capfd):
    """`inspect inspect.show=prompt checkpoint=X`: X's task, data and retrieval settings unless the command
    line sets them (as `eval checkpoint=X`), so the prompt shown is the one X was trained on."""
    from omegaconf import OmegaConf

    from percontrast_cli.cli.stages import context, prepare, stage_inspect
    from percontrast_cli.steps.models import base_model

    trained_on = config("task=topic", f"data.path={FIXTURES / 'topic'}", "retrieval.k=1")
    with context(trained_on) as ctx:
        model = base_model(ctx, task_data.load_task(trained_on))
        # a stand-in for a checkpoint trained with these settings: the base weights, its run config recorded
        run_config = OmegaConf.to_container(trained_on, resolve=True)
        with ctx.store.create("checkpoint", "c0ffee", {}, dict(model.inputs), run_config=run_config) as (
            tmp,
            _,
        ):
            (tmp / "source.json").write_text(json.dumps({"name_or_path": str(model.path / "model")}))
    overrides = ["inspect.show=prompt", "inspect.split=test", "checkpoint=c0ffee"]
    cfg = prepare("inspect", config(*overrides), overrides)
    assert cfg.task.name == "topic" and cfg.retrieval.k == 1
    capfd.readouterr()
    stage_inspect(cfg)
    (record,) = [
        r for r in OFFICIAL
        if r["file"] == "topic/test.jsonl" and r["line"] == 1 and r["method"] == "bm25" and r["k"] == 1
    ]  # fmt: skip
    assert capfd.readouterr().out == record["prompt"]
