"""Expected numbers for the parity test with a second PerCE implementation: MIRROR's train/train_PerCE.py
(rabbitrose/MIRROR), run on fixture batches, written to tests/fixtures/mirror_parity.json.

    python scripts/mirror_parity.py --mirror <checkout of rabbitrose/MIRROR>

MIRROR's module is imported as it is and its own functions run: ``collate`` (right padding),
``answer_logprobs`` (log-probs of the answer tokens), ``CLIP_MIN`` / ``CLIP_MAX`` and the ``compute_loss`` of
the Trainer class ``build_trainer_class()`` returns. Its top-level imports of three sibling modules
(``eval_lamp_base``, ``eval_lamp_sparse``, ``train_sft``: LongLaMP prompt building, paths and
hyper-parameters) serve only its dataset and ``main``, and they need MIRROR's data layout: they are
stubbed with empty modules. ``compute_loss`` runs unbound with a stand-in ``self`` (it reads only
``state.global_step``, set to 1 so it does not log).

The batches are this project's encoded training items of the synthetic email task (profile prompt +
target; counterfactual ``drop``: the same prompt without the profile section), given to both implementations
as the same token ids. MIRROR's own prompts cannot be made equal to ours (docs/reference.md, "Parity with
MIRROR"): its chat template and system prompt, the full history in dataset order instead of the top-k
retrieved items, the bare question as the counterfactual, left truncation of the prompt, EOS after the
answer. The model: the tests' tiny Llama (seeded), its weights scaled so PerContrast scores spread over both
clip bounds.
``fixture_model`` and ``fixture_items`` are what tests/test_mirror_parity.py rebuilds."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import torch
from omegaconf import OmegaConf

from percontrast_cli.data import synthetic
from percontrast_cli.data.encode import encode_example
from percontrast_cli.modeling.tiny import build_tiny_model, train_tokenizer

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mirror_parity.json"
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2, "max_length": 256}
WEIGHT_SCALE = 25.0  # an untrained model's scores sit near 0 (all at the lower clip bound): spread them
BATCHES = [[0, 1, 2, 3], [4, 5, 6]]  # two batches of unequal rows: padding differs between the two sides


def fixture_data():
    splits = synthetic.generate(
        "synthetic_email", n_train_users=4, n_test_users=1, examples_per_user=2, seed=0
    )
    return splits["train"]


def fixture_model():
    """The tiny model and tokenizer both sides run (deterministic: a seeded init, scaled)."""
    train = fixture_data()
    tokenizer = train_tokenizer([t for e in train for t in (e.input, e.output, *e.profile)], vocab_size=400)
    model = build_tiny_model(OmegaConf.create(TINY), tokenizer, seed=0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(WEIGHT_SCALE if parameter.dim() > 1 else 1.0)
    return model.eval(), tokenizer


def fixture_items(tokenizer) -> list[dict]:
    train = fixture_data()
    return [
        encode_example(tokenizer, e, k=3, max_length=256, counterfactual="drop", pool=train)
        for e in train[: sum(len(b) for b in BATCHES)]
    ]


def load_mirror(checkout: Path):
    path = checkout / "train" / "train_PerCE.py"
    if not path.is_file():
        sys.exit(f"--mirror {checkout}: no train/train_PerCE.py there (a checkout of rabbitrose/MIRROR?)")
    for name in ("eval_lamp_base", "eval_lamp_sparse", "train_sft"):
        sys.modules.setdefault(name, types.ModuleType(name))
    spec = importlib.util.spec_from_file_location("mirror_train_perce", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mirror_numbers(mirror, model, items: list[dict], pad_id: int) -> dict:
    """Per-token PIR and weights, and the loss, of MIRROR's code on one batch."""
    features = [
        {
            "input_ids": i["input_ids"],
            "labels": i["labels"],
            "input_ids_no_persona": i["cf_input_ids"],
            "labels_no_persona": i["cf_labels"],
        }
        for i in items
    ]
    batch = mirror.collate(features, pad_id)
    with torch.no_grad():
        with_profile = mirror.answer_logprobs(
            model, batch["input_ids"], batch["attention_mask"], batch["labels"]
        )
        without = mirror.answer_logprobs(
            model,
            batch["input_ids_no_persona"],
            batch["attention_mask_no_persona"],
            batch["labels_no_persona"],
        )
        pir = with_profile - without
        weights = pir.clamp(mirror.CLIP_MIN, mirror.CLIP_MAX)
        stand_in = types.SimpleNamespace(state=types.SimpleNamespace(global_step=1))
        loss = mirror.build_trainer_class().compute_loss(stand_in, model, batch, num_items_in_batch=None)
    # the weights above are the ones its loss used: sum w * nll / n over the batch's answer tokens
    assert torch.isclose(loss, (weights * -with_profile).sum() / len(weights), rtol=1e-6)
    return {"pir": pir.tolist(), "weights": weights.tolist(), "loss": float(loss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror", type=Path, required=True, help="a checkout of rabbitrose/MIRROR")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--commit", help="MIRROR's commit, when the checkout is not a git work tree")
    args = parser.parse_args()
    mirror = load_mirror(args.mirror)
    model, tokenizer = fixture_model()
    items = fixture_items(tokenizer)
    commit = (
        args.commit
        or subprocess.run(
            ["git", "-C", str(args.mirror), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    )
    record = {
        "source": "rabbitrose/MIRROR train/train_PerCE.py",
        "commit": commit or None,
        "clip": [mirror.CLIP_MIN, mirror.CLIP_MAX],
        "batches": [
            {
                "items": batch,
                **mirror_numbers(mirror, model, [items[i] for i in batch], tokenizer.pad_token_id),
            }
            for batch in BATCHES
        ],
    }
    weights = [w for b in record["batches"] for w in b["weights"]]
    low, high = record["clip"]
    print(
        f"{len(weights)} tokens: {sum(abs(w - low) < 1e-6 for w in weights)} at the floor, "
        f"{sum(abs(w - high) < 1e-6 for w in weights)} at the cap; losses "
        + ", ".join(f"{b['loss']:.6f}" for b in record["batches"]),
        file=sys.stderr,
    )
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
