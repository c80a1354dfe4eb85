"""The ROUGE-L ceiling of the persona tasks: a second, independent sample of the same request and persona
scored against the reference (what a model that knows the persona perfectly, but not which paraphrases and
order the reference drew, can expect), and the share of personal tokens.

    python scripts/persona_ceiling.py [samples=5]
"""

from __future__ import annotations

import random
import statistics
import sys

from percontrast_cli.data import personas
from percontrast_cli.data.synthetic import render
from percontrast_cli.metrics import rouge_scores


def resample(task: str, request: str, persona: dict, rng: random.Random) -> str:
    """A fresh target for the same request (subject and recipient) and persona."""
    while True:
        drawn, template = personas.target_template(personas.TASKS[task], rng)
        if drawn == request:
            return render(template, persona)[0]


def main(samples: int) -> None:
    users = {u.id: u for u in personas.draw_users(240, 30, seed=0)}
    for task in sorted(personas.TASKS):
        test = personas.generate(task, 240, 30, 2, seed=0)["test"]
        rng = random.Random(1)
        scores = []
        for _ in range(samples):
            predictions = [resample(task, e.input, users[e.user_id].persona, rng) for e in test]
            scores.append(float(rouge_scores(predictions, [e.output for e in test])["rougeL"].mean()))
        print(
            f"{task}: ROUGE-L of an independent sample {statistics.mean(scores):.4f} "
            f"(min {min(scores):.4f}, max {max(scores):.4f}, {samples} samples of {len(test)} test targets)"
        )


if __name__ == "__main__":
    main(int(sys.argv[1].partition("=")[2]) if len(sys.argv) > 1 else 5)
