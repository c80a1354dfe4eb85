"""Writes the small LongLaMP-schema fixture files the tests use (tests/fixtures/longlamp/).

    python scripts/make_longlamp_fixtures.py

Rows are in the hub's exact schema (docs/data.md): four columns (the task's user column, `input`,
`output`, `profile`), no example id column; profile items carry the hub's fields, with the hub's quirks:
`overall` and `year` as numbers or as strings, a `None` field (one user's), abstract profiles lowercased and
space-tokenised (one over the 750-word cut, one with runs of spaces and a line break), abstract `input` items
as a comma list or a numbered list, the review `input` typo. Six profile items per row, some repeated and many
sharing no word with the query, so BM25 ties decide what k = 1, 4 and 5 show. The text is invented. Per task:
`<task>.jsonl` (three users, two rows each, split by user when read) and `<task>/` with `train.jsonl`,
`val.jsonl`, `test.jsonl` (disjoint users).

The official prompts for these rows (tests/fixtures/longlamp/official_prompts.json) come from
scripts/longlamp_official_prompts.py: rerun it after changing the rows.
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
    kettle = {  # ben's kettle review has no summary: a missing field, never rendered as "None"
        "overall": "2.0",  # a number stored as a string
        "summary": None if user == "ben" else "Poor kettle",
        "reviewText": "The kettle broke after a week.",
        "description": "kettle",
    }
    lamp = {"overall": 3.0, "summary": "Okay", "reviewText": "Fine lamp.", "description": "lamp"}
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
            kettle,
            lamp,
            {"overall": 1.0, "summary": "Broke", "reviewText": "Snapped in half.", "description": "ladder"},
            {
                "overall": 5.0,
                "summary": f"Great for {hobby}",
                "reviewText": "It just works.",
                "description": f"A {thing} item for {hobby}.",
            },
            dict(lamp),  # the same review twice: equal BM25 scores, so the official tie order decides
        ],
    }


def abstract(user, hobby, thing, n):
    items = f"{thing}, sensors" if n == 1 else f"1. {thing}\n2. sensors"
    # dee has one abstract over the official 750-word cut
    long_text = " ".join(f"w{i}" for i in range(760)) if user == "dee" else "nets are deep ."
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
            {"title": "deep nets", "abstract": long_text, "id": f"{user}-p3", "year": 2020},
            # runs of spaces and a line break: the official cut re-joins the words with single spaces
            {
                "title": "graph routing",
                "abstract": "we route graphs  over   noisy links\nat scale .",
                "id": f"{user}-p4",
                "year": 2021,
            },
            {
                "title": "sensor fusion",
                "abstract": "fusing sensors across devices .",
                "id": f"{user}-p5",
                "year": 2022,
            },
            {
                "title": "unrelated work",
                "abstract": "graph algorithms for routing .",
                "id": f"{user}-p6",
                "year": 2023,
            },
        ],
    }


def topic(user, hobby, thing, n):
    def post(summary, content, suffix):
        return {"summary": summary, "content": content, "author": f"u_{user}", "id": f"t{n}{suffix}"}

    return {
        "author": f"u_{user}",
        "input": f"Generate the content for a reddit post {hobby} gear {n}",
        "output": f"Finally upgraded to {thing} gear for {hobby}; post {n} has the details.",
        "profile": [
            post(f"{hobby} tips", f"My best {hobby} tip: buy {thing} gear.", "a"),
            post("cat photo", "Look at my cat.", "b"),
            post(f"{hobby} gear", f"Which {hobby} gear do you use?", "c"),
            post("dog photo", "Look at my dog.", "d"),
            post("cat photo", "Look at my cat.", "e"),
            post("first post", "Hello reddit, my first post here.", "f"),
        ],
    }


def email(user, hobby, thing, n):
    return {
        "user_id": f"{user}@example.com",
        "input": f"Write an email with the subject: {hobby} club meeting {n}",
        "output": f"Hi all, the {hobby} club meets Friday; bring your {thing} kit. Mail {n}. {user}",
        "profile": [
            {"title": f"{hobby} club", "text": f"Thanks for coming to {hobby}, {user}"},
            {"title": "invoice", "text": "Please find the invoice attached."},
            {"title": "meeting", "text": "The club meeting moves to Friday."},
            {"title": "lunch", "text": "See you at noon."},
            {"title": "invoice", "text": "Please find the invoice attached."},
            {"title": "trip", "text": "Bags packed."},
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
