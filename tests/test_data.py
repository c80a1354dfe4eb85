import json

import pytest

from percontrast_cli.data import synthetic
from percontrast_cli.data.encode import encode_target
from percontrast_cli.data.schema import write_examples
from percontrast_cli.data.sources import load_examples
from percontrast_cli.errors import PercontrastError


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
        ({"output": "x", "profile": []}, "field 'input'"),
        ({"input": "x", "output": "", "profile": []}, "field 'output'"),
        ({"input": "x", "output": "y"}, "field 'profile'"),
        ({"input": "x", "output": "y", "profile": "not a list"}, "field 'profile'"),
        ({"input": "x", "output": "y", "profile": [3]}, "field 'profile[0]'"),
        (
            {"input": "x", "output": "y", "profile": [], "personal_spans": [[0, 9]]},
            "field 'personal_spans[0]'",
        ),
    ],
)
def test_malformed_row_names_file_row_and_field(tmp_path, row, field):
    path = tmp_path / "bad.jsonl"
    good = {"input": "a", "output": "b", "profile": ["c"]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(PercontrastError) as err:
        load_examples(path)
    assert str(path) in str(err.value) and "row 1" in str(err.value) and field in str(err.value)


def test_invalid_json_line_is_reported(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"input": "a"\n')
    with pytest.raises(PercontrastError, match="row 0: not valid JSON"):
        load_examples(path)
