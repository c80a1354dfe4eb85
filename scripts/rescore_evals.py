"""Rescores finished eval artifacts from their saved predictions, without generating again: the text metrics
with the current settings (e.g. LongLaMP's unstemmed ROUGE), per-example METEOR, the generation length, and,
on tasks with persona ground truth (the persona tasks), persona recall per field, over-insertion and leakage;
the per-example rows get the users' ids, so `percontrast report` can resample users.

    python scripts/rescore_evals.py <eval artifact dir | job dir | sweep dir> [...] [--stemmer] [--write]

The task's examples are rebuilt from the eval's own recorded config (`run_config`: the persona generator
with its sizes and seed, or data.path), and must give the references the predictions were scored against,
else the eval is refused (the generator changed since). What needs the model cannot be rescored: the
teacher-forced NLL of the reference per example (the eval's pooled `token_loss` is the same quantity and is
kept as `reference_nll`), and token accuracies are kept as they were.

Prints one JSON line per eval: its id, the stored and the recomputed values of the metrics that changed or
are new. With --write, the eval is updated in place: per_example.jsonl, metrics.json and the manifest's
metrics (its payload sizes updated, and a "rescored" record: when, by what, which metrics), so that a later
`percontrast report` over the same sweep uses the new metrics. --write with --stemmer is refused where the
eval was made without the stemmer: its id keys that setting, and its metrics must stay those of it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from percontrast_cli.evaluation.generate import words
from percontrast_cli.evaluation.persona_metrics import persona_metrics, score_generation, value_pool
from percontrast_cli.evaluation.text_metrics import text_metrics, text_scores, wordnet
from percontrast_cli.steps.task_data import load_task
from percontrast_cli.store.artifacts import JOB_ARTIFACTS, MANIFEST, payload_files


def recorded_config(manifest: dict):
    """The eval's recorded config over today's defaults (options added since then take their defaults)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        defaults = compose("config")
    OmegaConf.set_struct(defaults, False)
    return OmegaConf.merge(defaults, manifest["run_config"])


def eval_dirs(argument: str) -> list[Path]:
    """An eval artifact dir, or the evals a Hydra job or sweep dir recorded (under $PERCONTRAST_OUTPUTS)."""
    path = Path(argument)
    if (path / MANIFEST).is_file():
        return [path]
    jobs = (
        [path / JOB_ARTIFACTS]
        if (path / JOB_ARTIFACTS).is_file()
        else sorted(path.glob(f"*/{JOB_ARTIFACTS}"))
    )
    if not jobs:
        raise SystemExit(f"{argument}: neither an eval artifact dir nor a job/sweep dir with {JOB_ARTIFACTS}")
    root = Path(os.environ.get("PERCONTRAST_OUTPUTS", "outputs")) / "artifacts" / "eval"
    return [root / json.loads(job.read_text())["eval"] for job in jobs]


def rescore(directory: Path, stemmer: bool | None = None) -> tuple[dict, list[dict], dict]:
    """The eval's manifest, its rescored per-example rows and its rescored metrics."""
    manifest = json.loads((directory / MANIFEST).read_text())
    run_config = recorded_config(manifest)
    predictions = [json.loads(line) for line in (directory / "predictions.jsonl").read_text().splitlines()]
    data = load_task(run_config)
    by_id = {e.id: e for e in data.test}
    examples = []
    for number, row in enumerate(predictions, 1):
        example = by_id.get(row["id"])
        if example is None or example.output != row["reference"]:
            raise SystemExit(
                f"{directory}: predictions.jsonl line {number} ({row['id']}): the task data rebuilt from the "
                "eval's config has another reference there (the data or its generator changed since): cannot "
                "rescore"
            )
        examples.append(example)
    stored_rows = {}
    if (directory / "per_example.jsonl").is_file():
        for line in (directory / "per_example.jsonl").read_text().splitlines():
            stored = json.loads(line)  # one row per (target, sample) since eval.samples
            stored_rows[stored["id"], stored.get("sample", 0)] = stored
    eval_cfg = run_config.eval
    with_meteor = bool(eval_cfg.meteor)
    stem = eval_cfg.rouge_stemmer if stemmer is None else stemmer
    texts = [r["prediction"] for r in predictions]
    references = [e.output for e in examples]
    wn = wordnet(run_config.paths.cache) if with_meteor else None
    scores = text_scores(texts, references, stem, wn, with_meteor=with_meteor)
    metrics = dict(manifest["metrics"])
    metrics.update(text_metrics(texts, references, with_meteor=with_meteor, scores=scores))
    pool = value_pool(data.train + data.test)
    rows = []
    for index, (example, text, prediction) in enumerate(zip(examples, texts, predictions, strict=True)):
        key = (example.id, prediction.get("sample", 0))
        row = dict(stored_rows.get(key, {"id": example.id}))
        row["user_id"] = example.user_id
        row.update({name: float(values[index]) for name, values in scores.items()})
        row["generated_words"], row["reference_words"] = words(text), words(example.output)
        row.update(score_generation(example, text, pool, run_config.task.name))
        rows.append(row)
    metrics["generated_words"] = sum(r["generated_words"] for r in rows) / len(rows)
    metrics["reference_words"] = sum(r["reference_words"] for r in rows) / len(rows)
    metrics.update(persona_metrics(rows))
    if "reference_nll" not in metrics and "token_loss" in metrics:
        metrics["reference_nll"] = metrics["token_loss"]
    return manifest, rows, metrics


def write(directory: Path, manifest: dict, rows: list[dict], metrics: dict, changed: list[str]) -> None:
    """Replace the eval's rows and metrics, then its manifest (payload sizes, a `rescored` record)."""
    files = {
        "per_example.jsonl": "".join(json.dumps(row) + "\n" for row in rows),
        "metrics.json": json.dumps(metrics, indent=2),
    }
    for name, text in files.items():
        (directory / f"{name}.new").write_text(text)
        os.replace(directory / f"{name}.new", directory / name)
    manifest["metrics"] = metrics
    manifest["payload"] = payload_files(directory)
    record = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "by": "scripts/rescore_evals.py",
        "metrics": changed,
    }
    manifest.setdefault("rescored", []).append(record)
    (directory / f"{MANIFEST}.new").write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(directory / f"{MANIFEST}.new", directory / MANIFEST)


def refuse_other_settings(directory: Path, stemmer: bool | None) -> None:
    """--write keeps the eval's id, which keys its recorded eval.rouge_stemmer: scores made with another
    stemming written into it would disagree with the config the id names."""
    recorded = recorded_config(json.loads((directory / MANIFEST).read_text())).eval.rouge_stemmer
    if stemmer is not None and stemmer != recorded:
        raise SystemExit(
            f"{directory}: --write with --stemmer: this eval's id keys eval.rouge_stemmer={recorded}; its "
            "metrics must stay those of that setting: compare without --write, or evaluate again with "
            "`percontrast eval checkpoint=<id> eval.rouge_stemmer=true` (a new eval of its own)"
        )


def main(argv: list[str]) -> None:
    stemmer = True if "--stemmer" in argv else None
    for argument in (a for a in argv if not a.startswith("--")):
        for directory in eval_dirs(argument):
            if "--write" in argv:
                refuse_other_settings(directory, stemmer)
            manifest, rows, metrics = rescore(directory, stemmer)
            stored = manifest["metrics"]
            changed = sorted(k for k, v in metrics.items() if stored.get(k) != v)
            print(
                json.dumps(
                    {
                        "eval": manifest["id"],
                        "stored": {k: stored.get(k) for k in changed},
                        "recomputed": {k: metrics[k] for k in changed},
                    }
                )
            )
            if "--write" in argv:
                write(directory, manifest, rows, metrics, changed)


if __name__ == "__main__":
    main(sys.argv[1:])
