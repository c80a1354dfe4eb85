"""Writes the small LongLaMP-schema fixture files the tests use (tests/fixtures/longlamp/<task>.jsonl).

    python scripts/make_longlamp_fixtures.py

Field names follow the LongLaMP hub dataset (user field per task, `input`, `output`, `profile` of dicts);
the text is invented. Three users per task, two rows each, so a single file splits into train and test users.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "longlamp"
USERS = [("ana", "hiking", "waterproof"), ("ben", "cooking", "cast iron"), ("cy", "cycling", "carbon")]


def review(user, hobby, thing, n):
    return {
        "reviewerId": f"R-{user}",
        "input": 'Generate the review text written by a reviewer who has given an overall rating of "5.0" '
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
                "overall": 2.0,
                "summary": "Meh",
                "reviewText": "The kettle broke after a week.",
                "description": "kettle",
            },
        ],
    }


def abstract(user, hobby, thing, n):
    return {
        "name": f"Dr {user}",
        "input": f'Generate an abstract for the title "Learning {hobby} {n}" using the following items: '
        f"{thing}, sensors",
        "output": f"We study {hobby} with {thing} sensors and report results on study {n}.",
        "profile": [
            {"title": f"{thing} sensors for {hobby}", "abstract": f"A survey of {thing} sensors in {hobby}."},
            {"title": "Unrelated work", "abstract": "Graph algorithms for routing."},
        ],
    }


def topic(user, hobby, thing, n):
    return {
        "author": f"u/{user}",
        "input": f"Generate the content for a reddit post about {hobby} gear {n}",
        "output": f"Finally upgraded to {thing} gear for {hobby}; post {n} has the details.",
        "profile": [
            {"summary": f"{hobby} tips", "content": f"My best {hobby} tip: buy {thing} gear."},
            {"summary": "cat photo", "content": "Look at my cat."},
        ],
    }


def email(user, hobby, thing, n):
    return {
        "user_id": f"{user}@example.com",
        "input": f"Write an email about the {hobby} club meeting {n}",
        "output": f"Hi all, the {hobby} club meets Friday; bring your {thing} kit. Mail {n}. {user}",
        "profile": [
            {"subject": f"{hobby} club", "content": f"Thanks for coming to {hobby}, {user}"},
            {"subject": "invoice", "content": "Please find the invoice attached."},
        ],
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in (("review", review), ("abstract", abstract), ("topic", topic), ("email", email)):
        rows = [make(u, h, t, n) for u, h, t in USERS for n in (1, 2)]
        (OUT / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {OUT / name}.jsonl ({len(rows)} rows)")


if __name__ == "__main__":
    main()
