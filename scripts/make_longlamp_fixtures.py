"""Writes the small LongLaMP-schema fixture files the tests use (tests/fixtures/longlamp/).

    python scripts/make_longlamp_fixtures.py

Rows are in the hub's exact schema (../shared/LONGLAMP.md): four columns (the task's user column, `input`,
`output`, `profile`), no example id column; profile items carry the hub's fields, with the hub's quirks:
`overall` and `year` as numbers or as strings, a `None` field, abstract profiles lowercased and
space-tokenised, abstract `input` items as a comma list or a numbered list, the review `input` typo. The text
is invented. Per task: `<task>.jsonl` (three users, two rows each, split by user when read) and `<task>/` with
`train.jsonl`, `val.jsonl`, `test.jsonl` (disjoint users).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "longlamp"
USERS = [
    ("ana", "hiking", "waterproof"),
    ("ben", "cooking", "cast iron"),
    ("cy", "cycling", "carbon"),
    ("dee", "fishing", "graphite"),
    ("eli", "climbing", "chalk"),
    ("fay", "sewing", "linen"),
]


def review(user, hobby, thing, n):
    return {
        "reviewerId": f"A{zlib.crc32(user.encode()) % 10**6:06d}{user.upper()}",
        "input": 'Generate the review text written by a reviewer who has a given an overall rating of "5.0" '
        f'for a product with description "A {thing} item for {hobby}." '
        f'The summary of the review text is "Great {n}".',
        "output": f"I use this {thing} gear for {hobby} every weekend and it held up well. "
        f"Review {n} by {user}.",
        "profile": [
            {
                "overall": 4.0,
                "summary": f"Solid {thing}",
                "reviewText": f"My {thing} boots for {hobby} are great.",
                "description": f"{thing} boots",
            },
            {
                "overall": "2.0",  # a number stored as a string
                "summary": None,  # a missing field: never rendered as "None"
                "reviewText": "The kettle broke after a week.",
                "description": "kettle",
            },
        ],
    }


def abstract(user, hobby, thing, n):
    items = f"{thing}, sensors" if n == 1 else f"1. {thing}\n2. sensors"
    return {
        "name": f"{user.capitalize()} {hobby.capitalize()}son",
        "input": f'Generate an abstract for the title "Learning {hobby} {n}" using the following items: '
        + items,
        "output": f"We study {hobby} with {thing} sensors and report results on study {n}.",
        "profile": [
            {
                "title": f"{thing} sensors for {hobby}",
                "abstract": f"a survey of {thing} sensors in {hobby} ( {hobby} - sensing ) ...",
                "id": f"{user}-p1",
                "year": 2019,
            },
            {
                "title": "unrelated work",
                "abstract": "graph algorithms for routing .",
                "id": f"{user}-p2",
                "year": "2020",
            },
        ],
    }


def topic(user, hobby, thing, n):
    return {
        "author": f"u_{user}",
        "input": f"Generate the content for a reddit post {hobby} gear {n}",
        "output": f"Finally upgraded to {thing} gear for {hobby}; post {n} has the details.",
        "profile": [
            {
                "summary": f"{hobby} tips",
                "content": f"My best {hobby} tip: buy {thing} gear.",
                "author": f"u_{user}",
                "id": f"t{n}a",
            },
            {"summary": "cat photo", "content": "Look at my cat.", "author": f"u_{user}", "id": f"t{n}b"},
        ],
    }


def email(user, hobby, thing, n):
    return {
        "user_id": f"{user}@example.com",
        "input": f"Write an email about the {hobby} club meeting {n}",
        "output": f"Hi all, the {hobby} club meets Friday; bring your {thing} kit. Mail {n}. {user}",
        "profile": [
            {"title": f"{hobby} club", "text": f"Thanks for coming to {hobby}, {user}"},
            {"title": "invoice", "text": "Please find the invoice attached."},
        ],
    }


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {path} ({len(rows)} rows)")


def main() -> None:
    for name, make in (("review", review), ("abstract", abstract), ("topic", topic), ("email", email)):
        write(OUT / f"{name}.jsonl", [make(u, h, t, n) for u, h, t in USERS[:3] for n in (1, 2)])
        splits = {"train": USERS[:4], "val": USERS[4:5], "test": USERS[5:]}
        for split, users in splits.items():
            write(OUT / name / f"{split}.jsonl", [make(u, h, t, n) for u, h, t in users for n in (1, 2)])


if __name__ == "__main__":
    main()
