"""A persona-task eval end to end (issue 19): its per-example rows and metrics carry persona recall, leakage,
length and the reference NLL; scripts/rescore_evals.py rebuilds exactly those from the saved predictions of
an eval that predates them, and `report` then resamples users."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from percontrast_cli.store.artifacts import payload_files

from .test_end_to_end import artifact_ids, cli

SMALL = [
    "task=persona_email",
    "task.n_train_users=4",
    "task.n_test_users=3",
    "task.examples_per_user=2",
    "model.vocab_size=400",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_heads=2",
    "train.warmup_steps=2",
    "train.steps=2",
    "train.batch_size=4",
    "eval.max_new_tokens=24",
    "estimator.batch_size=8",
]
NEW = ("user_id", "meteor", "generated_words", "reference_words", "persona_present", "persona_recalled",
       "persona_absent", "persona_over_inserted", "persona_leaked", "persona_n_fields")  # fmt: skip


def rescore(*args, root, code=0):
    script = Path(__file__).parents[1] / "scripts" / "rescore_evals.py"
    env = {**os.environ, "PERCONTRAST_OUTPUTS": str(root)}
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env)
    assert result.returncode == code, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()] if code == 0 else result.stderr


@pytest.mark.slow
def test_persona_eval_rows_and_rescoring_an_older_eval(tmp_path):
    root = tmp_path / "out"
    cli("run", *SMALL, f"hydra.run.dir={tmp_path / 'job'}", root=root, cwd=tmp_path)
    (eval_id,) = artifact_ids(root, "eval")
    directory = root / "artifacts" / "eval" / eval_id
    manifest = json.loads((directory / "manifest.json").read_text())
    metrics = manifest["metrics"]
    rows = [json.loads(line) for line in (directory / "per_example.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["user_id"] for r in rows} == {f"test-user000{i}" for i in (4, 5, 6)}
    for key in ("persona_recall", "persona_leakage", "reference_nll", "generated_words", "meteor"):
        assert key in metrics, key
    assert metrics["reference_nll"] == pytest.approx(
        sum(r["target_nll"] for r in rows) / sum(r["target_tokens"] for r in rows), rel=1e-5
    )
    present = sum(len(r["persona_present"]) for r in rows)
    assert metrics["persona_recall"] == pytest.approx(sum(len(r["persona_recalled"]) for r in rows) / present)

    # the same eval as an older version wrote it: no user ids, no per-example METEOR, no persona metrics
    old_rows = [{k: v for k, v in r.items() if k not in NEW} for r in rows]
    (directory / "per_example.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old_rows))
    dropped = ("persona_", "generated_words", "reference_words", "reference_nll")
    manifest["metrics"] = {k: v for k, v in metrics.items() if not k.startswith(dropped)}
    manifest["payload"] = payload_files(directory)
    (directory / "manifest.json").write_text(json.dumps(manifest))

    # stemmed scores written into an eval whose id keys the unstemmed setting: refused, nothing written
    before = (directory / "per_example.jsonl").read_text()
    refused = rescore(str(tmp_path / "job"), "--stemmer", "--write", root=root, code=1)
    assert "this eval's id keys eval.rouge_stemmer=False" in refused and "Traceback" not in refused
    assert (directory / "per_example.jsonl").read_text() == before
    (printed,) = rescore(str(tmp_path / "job"), "--write", root=root)
    assert printed["eval"] == eval_id and printed["stored"]["persona_recall"] is None
    assert printed["recomputed"]["persona_recall"] == pytest.approx(metrics["persona_recall"])
    rescored = json.loads((directory / "manifest.json").read_text())
    for key, value in metrics.items():
        assert rescored["metrics"][key] == pytest.approx(value, rel=1e-6), key
    assert rescored["rescored"][0]["by"] == "scripts/rescore_evals.py"
    again = [json.loads(line) for line in (directory / "per_example.jsonl").read_text().splitlines()]
    for new, original in zip(again, rows, strict=True):
        for key in (*NEW, "personal_correct", "rougeL"):
            assert new[key] == pytest.approx(original[key]), key
    # the rescored eval is a complete artifact the report reads (its payload sizes were updated)
    shown = cli("report", f"report.evals=[{tmp_path / 'job'}]", f"report.out_dir={tmp_path / 'r'}", root=root,
                cwd=tmp_path)  # fmt: skip
    assert "persona_recall (higher is better)" in shown
