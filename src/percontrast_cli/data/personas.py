"""The persona task family (persona_email, persona_review, persona_topic): one generator, harder on purpose.

What makes the older synthetic tasks easy is what this family removes:
- persona values come from large combinatorial pools (thousands of names, a thousand towns, hundreds of
  brands and catchphrases), so most test users' values never occur in training: a model has to copy them
  from the profile instead of memorising them;
- personal content takes several forms: slot values (name, town, brand, hobby), a recurring phrase (the
  user's catchphrase) and style choices (greeting word, sign-off, emoji or none) that only the profile
  reveals;
- the generic text varies: every sentence has several paraphrases and the body sentences come in random
  order, so even a perfect model cannot reach ROUGE-L 1 (as on LongLaMP, where references are one sample);
- personal tokens are a small minority of each target, and their character spans are exact: a span covers
  precisely the characters that change when the persona changes (tests/test_personas.py checks this);
- the three tasks share users and personas (same seed, same users, same split), so a model trained on one
  task can be evaluated on another task's held-out users.
"""

from __future__ import annotations

import json
import random
from importlib.resources import files

from percontrast_cli.data.schema import Example
from percontrast_cli.data.synthetic import User, examples_for, render

# The word pools and text templates are data, kept in a package file: persona_pools.json.
POOLS = json.loads(files("percontrast_cli.data").joinpath("persona_pools.json").read_text(encoding="utf-8"))
FIRST_NAMES, LAST_NAMES = POOLS["first_names"], POOLS["last_names"]
TOWN_HEADS, TOWN_TAILS = POOLS["town_heads"], POOLS["town_tails"]
BRAND_HEADS, BRAND_TAILS = POOLS["brand_heads"], POOLS["brand_tails"]
OPENERS, MAXIMS, HOBBIES = POOLS["openers"], POOLS["maxims"], POOLS["hobbies"]
GREETINGS, SIGNOFFS = POOLS["greetings"], POOLS["signoffs"]
EMOJI = POOLS["emoji"]  # "": this user writes without one
# The user's past writings: one list of variants per document; every attribute and every style choice shows
# up in them.
PROFILE_DOCS: list[list[str]] = POOLS["profile_docs"]

# Open-vocabulary attributes (large pools: mostly unseen at test time) and style choices (small sets).
OPEN_ATTRIBUTES = ("name", "town", "brand", "catchphrase")


def draw_persona(rng: random.Random) -> dict[str, str]:
    return {
        "name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
        "town": rng.choice(TOWN_HEADS) + rng.choice(TOWN_TAILS),
        "brand": rng.choice(BRAND_HEADS) + rng.choice(BRAND_TAILS),
        "catchphrase": f"{rng.choice(OPENERS)} {rng.choice(MAXIMS)}",
        "hobby": rng.choice(HOBBIES),
        "greeting": rng.choice(GREETINGS),
        "signoff": rng.choice(SIGNOFFS),
        "emoji": rng.choice(EMOJI),
    }


# Targets. A task is: its request, the recipients/subjects a request can name, openings, per-subject body
# sentences (each a list of paraphrases; their order is shuffled), fillers and closings (persona_pools.json,
# under "tasks"). Body sentences carry slots.
FILLERS_PER_TARGET = 5  # generic sentences with no slot, on top of the subject's four
CATCHPHRASE_RATE = 0.3  # share of targets that use the user's catchphrase
TASKS: dict[str, dict] = POOLS["tasks"]  # persona_email, persona_review, persona_topic


def target_template(spec: dict, rng: random.Random) -> tuple[str, str]:
    """A request and a target template: generic text chosen and ordered by `rng`, persona slots as {attr}.
    The request (subject, recipient) decides which sentences come; the paraphrases and their order do not
    follow from it, which is the generic variation no model can predict."""
    subject = rng.choice(sorted(spec["subjects"]))
    recipient = rng.choice(spec["recipients"])
    body = [rng.choice(paraphrases) for paraphrases in spec["subjects"][subject]]
    body += rng.sample(spec["fillers"], FILLERS_PER_TARGET)
    rng.shuffle(body)
    # The catchphrase (a recurring personal phrase) comes in some targets, at a random place in the body.
    if rng.random() < CATCHPHRASE_RATE:
        body.insert(rng.randrange(1, len(body) + 1), "{catchphrase}")
    sentences = [rng.choice(spec["openings"]), *body, rng.choice(spec["closings"]) + "{emoji}"]
    # The recipient is generic (it comes from the request), so it is written into the template directly.
    head = spec["head"].replace("{recipient}", recipient)
    template = head + " ".join(sentences) + spec["tail"]
    return spec["request"].format(recipient=recipient, subject=subject), template


def draw_users(n_train_users: int, n_test_users: int, seed: int) -> list[User]:
    """The users, their personas and profiles: a function of the seed alone, shared by the three tasks."""
    rng = random.Random(f"personas-{seed}")
    users = []
    for u in range(n_train_users + n_test_users):
        split = "train" if u < n_train_users else "test"
        persona = draw_persona(rng)
        profile = [render(rng.choice(variants), persona)[0] for variants in PROFILE_DOCS]
        rng.shuffle(profile)
        users.append(User(f"{split}-user{u:04d}", split, persona, tuple(profile)))
    return users


def generate(
    task: str, n_train_users: int, n_test_users: int, examples_per_user: int, seed: int
) -> dict[str, list[Example]]:
    """Deterministic train/test splits; test users never appear in train. The targets come from a
    task-specific stream, the users from `draw_users` (the same in every task)."""
    spec = TASKS[task]
    rng = random.Random(f"{task}-{seed}")
    users = draw_users(n_train_users, n_test_users, seed)
    return examples_for(users, examples_per_user, lambda: target_template(spec, rng))
