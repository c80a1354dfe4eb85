"""ROUGE-L levels of the persona tasks for a model that knows the persona perfectly but not which
paraphrases and order the reference drew:

- an independent sample of the same request and persona, scored against the reference (a perfect sampler);
- the medoid of 10 such samples (the one closest in ROUGE-L to the other nine), scored against the
  reference: what a deterministic (greedy) output that picks the most typical text can reach.

    python scripts/persona_ceiling.py [samples=5]
"""

from __future__ import annotations

import random
import statistics
import sys

from percontrast_cli.data import personas
from percontrast_cli.data.synthetic import render
from percontrast_cli.evaluation.text_metrics import rouge_scores


def resample(task: str, request: str, persona: dict, rng: random.Random) -> str:
    """A fresh target for the same request (subject and recipient) and persona."""
    while True:
        drawn, template = personas.target_template(personas.TASKS[task], rng)
        if drawn == request:
            return render(template, persona)[0]


def medoid(candidates: list[str]) -> str:
    """The candidate with the highest mean ROUGE-L against the others."""
    best, best_score = candidates[0], -1.0
    for i, candidate in enumerate(candidates):
        others = candidates[:i] + candidates[i + 1 :]
        score = float(rouge_scores([candidate] * len(others), others)["rougeL"].mean())
        if score > best_score:
            best, best_score = candidate, score
    return best


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
        typical = [
            medoid([resample(task, e.input, users[e.user_id].persona, rng) for _ in range(10)]) for e in test
        ]
        typical_score = float(rouge_scores(typical, [e.output for e in test])["rougeL"].mean())
        print(f"{task}: ROUGE-L of the medoid of 10 samples {typical_score:.4f}")


if __name__ == "__main__":
    main(int(sys.argv[1].partition("=")[2]) if len(sys.argv) > 1 else 5)
