"""Regenerates tests/fixtures/longlamp/official_prompts.json: the prompts LongLaMP's official code builds for
the fixture rows, which tests/test_longlamp.py compares with ours byte for byte.

    git clone https://github.com/LongLaMP-benchmark/LongLaMP-Benchmark /tmp/longlamp-official
    python scripts/longlamp_official_prompts.py /tmp/longlamp-official [--tokenizer NAME_OR_DIR]

The official code is run, not copied: its `GeneralSeq2SeqDataset` (longLaMP/data/datasets.py) with the
prompt generator of longLaMP/prompts/prompts.py, for every row of
tests/fixtures/longlamp/<task>/{train,val,test}.jsonl, with no profile (`use_profile=False`: k = 0) and with
BM25 and recency retrieval ("bm25", "rec") at k = 1, 4, 5.
It needs rank-bm25, transformers, torch and datasets (the project's own dependencies).

Two adaptations, both stated in docs/longlamp.md:
- the official topic code reads the profile fields `input`/`output`; the hub's are `summary`/`content`, so
  the items are given both names (as every port of the code does);
- the official prompt functions round-trip each long item text through the model's tokenizer (encode,
  truncate to its maximum length, decode). By default that round trip is the identity here (the text as it
  is, as with the byte-level BPE tokenizers of decoder-only models); --tokenizer runs a real one instead.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "longlamp"
OUT = FIXTURES / "official_prompts.json"
# our task name -> the official code's task name
TASKS = {
    "review": "product_review_writing",
    "abstract": "generation_abstract",
    "topic": "topic_writing",
    "email": "email_generation",
}
KS = (1, 4, 5)
METHODS = {"bm25": "bm25", "recency": "rec"}  # ours -> the official retriever name


class Verbatim:
    """A tokenizer whose encode/decode round trip returns the text unchanged."""

    def __call__(self, text, max_length=None, truncation=False):
        return {"input_ids": text}

    def batch_decode(self, batch, skip_special_tokens=True):
        return list(batch)


def official_rows(task: str, rows: list[dict]) -> list[dict]:
    if task != "topic":
        return rows
    return [
        {**row, "profile": [{**p, "input": p["summary"], "output": p["content"]} for p in row["profile"]]}
        for row in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("official", type=Path, help="a checkout of LongLaMP-benchmark/LongLaMP-Benchmark")
    parser.add_argument("--tokenizer", help="round-trip item texts through this tokenizer (default: none)")
    args = parser.parse_args()
    code = args.official / "longLaMP"
    if not (code / "prompts" / "prompts.py").is_file():
        sys.exit(f"{args.official}: not a LongLaMP-Benchmark checkout (no longLaMP/prompts/prompts.py)")
    sys.path.insert(0, str(code))
    from data.datasets import GeneralSeq2SeqDataset  # the official code
    from prompts.prompts import create_prompt_generator

    tokenizer = Verbatim()
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    commit = subprocess.run(
        ["git", "-C", str(args.official), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, official_task in TASKS.items():
            for split in ("train", "val", "test"):
                path = FIXTURES / task / f"{split}.jsonl"
                rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
                data = Path(tmp) / f"{task}-{split}.json"
                data.write_text(json.dumps(official_rows(task, rows)))
                settings = [(0, None, GeneralSeq2SeqDataset(str(data), False, official_task))]
                for method, official_method in METHODS.items():
                    for k in KS:
                        make, _ = create_prompt_generator(
                            k, None, official_method, False, None, 512, tokenizer
                        )
                        settings.append(
                            (k, method, GeneralSeq2SeqDataset(str(data), True, official_task, make))
                        )
                for line in range(len(rows)):
                    for k, method, dataset in settings:
                        records.append(
                            {
                                "file": f"{task}/{split}.jsonl",
                                "line": line + 1,
                                "method": method,
                                "k": k,
                                "prompt": dataset[line]["source"],
                            }
                        )
    payload = {
        "source": f"LongLaMP-benchmark/LongLaMP-Benchmark {commit or '(commit unknown)'}: longLaMP/data/"
        "datasets.py GeneralSeq2SeqDataset, longLaMP/prompts/prompts.py create_prompt_generator",
        "tokenizer_round_trip": args.tokenizer or "none (text unchanged)",
        "prompts": records,
    }
    OUT.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({len(records)} prompts)")


if __name__ == "__main__":
    main()
