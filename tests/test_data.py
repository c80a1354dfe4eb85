import json

import pytest

from percontrast_cli.data import synthetic
from percontrast_cli.data.encode import encode_target
from percontrast_cli.data.schema import RowSchema, write_examples
from percontrast_cli.data.sources import file_rows, load_examples, split_by_user, to_examples
from percontrast_cli.runtime.errors import PercontrastError


def test_synthetic_is_deterministic_and_splits_by_user():
    a = synthetic.generate("synthetic_review", 5, 2, 3, seed=7)
    b = synthetic.generate("synthetic_review", 5, 2, 3, seed=7)
    c = synthetic.generate("synthetic_review", 5, 2, 3, seed=8)
    assert a == b and a != c
    assert {e.user_id for e in a["train"]}.isdisjoint({e.user_id for e in a["test"]})
    assert len(a["train"]) == 15 and len(a["test"]) == 6


def test_personal_spans_are_persona_values_revealed_by_the_profile():
    for example in synthetic.generate("synthetic_email", 6, 0, 4, seed=0)["train"]:
        values = [example.output[a:b] for a, b in example.personal_spans]
        assert values
        profile = " ".join(example.profile)
        assert all(v in profile for v in values)


def test_generic_text_dominates_the_target(tokenizer, splits):
    personal = [p for e in splits["train"] for p in encode_target(tokenizer, e, 256).personal]
    assert 0.02 < sum(personal) / len(personal) < 0.3


def test_roundtrip_through_jsonl(tmp_path, splits):
    path = tmp_path / "train.jsonl"
    write_examples(splits["train"], path)
    assert load_examples(path) == splits["train"]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"user_id": "u", "output": "x", "profile": []}, "field 'input'"),
        ({"user_id": "u", "input": "x", "output": "", "profile": []}, "field 'output'"),
        ({"user_id": "u", "input": "x", "output": "y"}, "field 'profile'"),
        ({"user_id": "u", "input": "x", "output": "y", "profile": "not a list"}, "field 'profile'"),
        ({"user_id": "u", "input": "x", "output": "y", "profile": [3]}, "field 'profile[0]'"),
        ({"user_id": "u", "input": "x", "output": "y", "profile": [{"overall": 3}]}, "field 'profile[0]'"),
        (
            {"user_id": "u", "input": "x", "output": "y", "profile": [], "personal_spans": [[0, 9]]},
            "field 'personal_spans[0]'",
        ),
        ({"input": "x", "output": "y", "profile": []}, "field 'user_id'"),
    ],
)
def test_malformed_row_names_file_row_and_field(tmp_path, row, field):
    path = tmp_path / "bad.jsonl"
    good = {"user_id": "u", "input": "a", "output": "b", "profile": ["c"]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(PercontrastError) as err:
        load_examples(path)
    # 1-based line numbers: the bad row is the file's second line
    assert str(path) in str(err.value) and "line 2:" in str(err.value) and field in str(err.value)


def test_invalid_json_line_is_reported(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"input": "a"\n')
    with pytest.raises(PercontrastError, match="line 1: not valid JSON"):
        load_examples(path)


REVIEW_TEMPLATE = '{overall} stars, "{summary}": {reviewText}'


def review_rows(path, profile):
    rows = [
        {"reviewerId": f"u{i}", "input": "write", "output": "text", "profile": profile, "id": str(i)}
        for i in range(2)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"overall": 5.0, "summary": "Nice", "reviewText": "Works."}, '5.0 stars, "Nice": Works.'),
        ({"reviewText": "Only the text."}, "Only the text."),  # template fields missing: the text fields
        ({"overall": None, "summary": "Sum", "reviewText": "Body"}, "Sum Body"),  # None never rendered
        ({"overall": "4", "summary": "", "reviewText": "Body"}, "4 Body"),
    ],
)
def test_profile_items_never_become_template_debris(tmp_path, item, expected):
    path = review_rows(tmp_path / "r.jsonl", [item])
    (example, _) = to_examples(file_rows(path), RowSchema("reviewerId", REVIEW_TEMPLATE))
    assert example.profile == (expected,)
    assert "None" not in example.profile[0] and 'stars, ""' not in example.profile[0]


def test_profile_item_without_text_is_an_error_naming_line_and_field(tmp_path):
    path = review_rows(tmp_path / "r.jsonl", [{"reviewText": "ok"}, {"overall": 3.0}])
    with pytest.raises(PercontrastError, match=r"r\.jsonl: line 1: field 'profile\[1\]'"):
        to_examples(file_rows(path), RowSchema("reviewerId", REVIEW_TEMPLATE))


def test_missing_user_column_is_an_error_naming_task_user_field(tmp_path):
    path = review_rows(tmp_path / "r.jsonl", ["item"])
    with pytest.raises(PercontrastError, match="field 'author'.*task.user_field"):
        to_examples(file_rows(path), RowSchema("author"))


def test_duplicate_example_ids_are_an_error(tmp_path):
    rows = [
        {"user_id": f"u{i}", "id": "same", "input": "a", "output": "b", "profile": ["c"]} for i in range(2)
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(PercontrastError, match="duplicate example id 'same'"):
        load_examples(path)


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps({"user_id": "u", "input": "a", "output": "b", "profile": ["c"]})
    path.write_bytes(good.encode() + b"\n" + good.replace("b", "caf\xe9").encode("latin-1") + b"\n")
    with pytest.raises(PercontrastError, match=r"latin1\.jsonl: line 2: byte 0xe9 .* not valid UTF-8"):
        load_examples(path)


def test_a_file_with_one_user_cannot_be_split_by_user(tmp_path):
    rows = [
        {"user_id": "only", "id": str(i), "input": "a", "output": "b", "profile": ["c"]} for i in range(3)
    ]
    path = tmp_path / "one.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(PercontrastError, match=r"one\.jsonl: need at least 2 users to split by user"):
        split_by_user(load_examples(path), 0.2, str(path))
