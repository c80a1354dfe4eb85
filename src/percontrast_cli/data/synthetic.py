"""The synthetic persona task family: LongLaMP-shaped data with ground-truth personal spans.

Each user has a latent persona (name, sign-off, brand, colour, size, city, hobby). Their profile documents
reveal it; each target text is a generic template chosen by the request, with a few persona slots filled in.
The character spans of those slot values are the ground truth of which target tokens depend on the profile,
so the estimator can be scored directly (AUROC), which real data does not allow. Generic text dominates the
target, as in real personalised writing. Train and test users are disjoint.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from percontrast_cli.data.schema import Example, template_fields

PERSONA_VALUES: dict[str, list[str]] = {
    "name": [
        "Alice",
        "Bruno",
        "Chloe",
        "Diego",
        "Emma",
        "Farid",
        "Greta",
        "Hugo",
        "Ines",
        "Jonas",
        "Kira",
        "Liam",
        "Maya",
        "Nora",
        "Omar",
        "Priya",
        "Quinn",
        "Rosa",
        "Sven",
        "Tara",
    ],
    "signoff": ["Cheers", "Thanks", "Best", "Regards", "Sincerely", "Warmly", "Ciao", "Yours"],
    "brand": [
        "Nike",
        "Adidas",
        "Puma",
        "Zara",
        "Uniqlo",
        "Levis",
        "Asics",
        "Reebok",
        "Vans",
        "Fila",
        "Mango",
        "Diesel",
    ],
    "colour": ["red", "blue", "green", "black", "white", "yellow", "purple", "orange", "grey", "pink"],
    "size": ["small", "medium", "large", "huge"],
    "city": ["Paris", "Berlin", "Madrid", "Rome", "Oslo", "Vienna", "Lisbon", "Prague", "Dublin", "Athens"],
    "hobby": ["running", "hiking", "cycling", "tennis", "yoga", "climbing", "dancing", "swimming"],
}

# Profile documents: every user gets all of them (shuffled), so every attribute is revealed.
PROFILE_TEMPLATES = [
    "Back home in {city} after a long week. {signoff}, {name}",
    "My new {colour} jacket from {brand} fits perfectly in {size}.",
    "Spent the whole weekend {hobby} with friends near {city}.",
    "Note to self: {brand} always has the best {colour} colours. {name}",
    "Signing every letter with {signoff} since school. {name}",
]

# Target texts per task: the request picks the template, so generic words are predictable without a profile.
EMAIL_TEMPLATES = {
    "a delayed order": (
        "Hello,\nI am writing about my recent order of a {colour} jacket from {brand}. It was supposed to "
        "arrive last week, but I have not received it yet. Could you please check the status of the "
        "delivery? I live in {city}, so the parcel may be at the local depot.\nThank you for your help.\n"
        "{signoff},\n{name}"
    ),
    "a wrong size": (
        "Hello,\nThe shoes I ordered from {brand} arrived today, but they are not {size} as I asked. I would "
        "like to return them and get the right size instead. Please send me a return label as soon as "
        "possible.\n{signoff},\n{name}"
    ),
    "a club membership": (
        "Dear club team,\nI would like to join your {hobby} group this season. I have been {hobby} for a few "
        "years now and I am looking for people to train with in {city}. Please let me know how to sign up "
        "and what the fees are.\n{signoff},\n{name}"
    ),
    "a trip invitation": (
        "Hi there,\nI am planning a short trip next month and would love some company. We could go {hobby} "
        "during the day and explore the old town in the evening. I will bring my {colour} backpack, so you "
        "will spot me easily at the station in {city}.\n{signoff},\n{name}"
    ),
    "a gift request": (
        "Dear shop,\nI am looking for a birthday present for a friend. Something from {brand} in {colour} "
        "would be ideal, ideally in size {size}. Could you tell me whether you have anything like that in "
        "stock?\n{signoff},\n{name}"
    ),
}

REVIEW_TEMPLATES = {
    "running shoes": (
        "I bought these shoes from {brand} in {colour} and size {size}. They are light, the sole feels "
        "solid and the fit is comfortable for long days. I mostly use them for {hobby} around {city}, and "
        "after a month they still look new. Recommended by {name}."
    ),
    "a rain jacket": (
        "This jacket kept me dry during a full week of rain in {city}. The {colour} fabric looks great and "
        "the {size} fits well over a sweater. It packs small, which is handy when I go {hobby}. Four stars "
        "from {name}."
    ),
    "a backpack": (
        "The backpack has plenty of pockets and the straps are well padded. I picked the {colour} one from "
        "{brand} and take it everywhere, even {hobby} on weekends. The zips feel strong and nothing has "
        "broken so far. {signoff}, {name}."
    ),
    "a water bottle": (
        "A simple bottle that keeps water cold for hours. The lid does not leak and it fits in the side "
        "pocket of my bag. I carry it when {hobby} in {city}, and the {colour} colour is easy to find. "
        "{signoff}, {name}."
    ),
}

TASKS = {
    "synthetic_email": ("Write an email about {topic}.", EMAIL_TEMPLATES),
    "synthetic_review": ("Write a product review of {topic}.", REVIEW_TEMPLATES),
}

_SLOT = re.compile(r"\{(\w+)\}")


def render(template: str, persona: dict[str, str]) -> tuple[str, list[tuple[int, int]]]:
    """Fill the slots of a template and return the text with the character spans of the filled values."""
    text, spans, cursor = [], [], 0
    length = 0
    for match in _SLOT.finditer(template):
        literal = template[cursor : match.start()]
        text.append(literal)
        length += len(literal)
        value = persona[match.group(1)]
        spans.append((length, length + len(value)))
        text.append(value)
        length += len(value)
        cursor = match.end()
    text.append(template[cursor:])
    return "".join(text), spans


@dataclass(frozen=True)
class User:
    id: str
    split: str  # train | test
    persona: dict[str, str]
    profile: tuple[str, ...]


def examples_for(
    users: Iterable[User], examples_per_user: int, target: Callable[[], tuple[str, str]]
) -> dict[str, list[Example]]:
    """The one example loop of the generated tasks: for each user in turn, `examples_per_user` targets, each a
    (request, template) from `target()` rendered with the user's persona. `users` may be lazy and draw from
    the same random stream as `target` (the synthetic family does): the draws then interleave as they come."""
    splits: dict[str, list[Example]] = {"train": [], "test": []}
    for user in users:
        for k in range(examples_per_user):
            request, template = target()
            output, spans = render(template, user.persona)
            # Ground truth of the generation-level persona metrics: the user's values and the fields this
            # reference writes (a slot with an empty value, e.g. no emoji, writes nothing).
            used = {name for name in template_fields(template) if user.persona[name]}
            splits[user.split].append(
                Example(
                    id=f"{user.id}-{k}",
                    user_id=user.id,
                    input=request,
                    output=output,
                    profile=user.profile,
                    personal_spans=tuple(s for s in spans if s[1] > s[0]),  # an empty value: no span
                    persona=tuple(user.persona.items()),
                    persona_fields=tuple(name for name in user.persona if name in used),
                )
            )
    return splits


def generate(
    task: str,
    n_train_users: int,
    n_test_users: int,
    examples_per_user: int,
    seed: int,
) -> dict[str, list[Example]]:
    """Deterministic train/test splits; test users never appear in train."""
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; choose from {sorted(TASKS)}")
    request, templates = TASKS[task]
    rng = random.Random(f"{task}-{seed}")
    topics = sorted(templates)

    def users() -> Iterator[User]:  # drawn one at a time, between that user's targets (one random stream)
        for u in range(n_train_users + n_test_users):
            split = "train" if u < n_train_users else "test"
            persona = {attr: rng.choice(values) for attr, values in PERSONA_VALUES.items()}
            profile_docs = [render(t, persona)[0] for t in PROFILE_TEMPLATES]
            rng.shuffle(profile_docs)
            yield User(f"{split}-user{u:04d}", split, persona, tuple(profile_docs))

    def target() -> tuple[str, str]:
        topic = rng.choice(topics)
        return request.format(topic=topic), templates[topic]

    return examples_for(users(), examples_per_user, target)
