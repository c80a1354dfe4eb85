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

import random
from dataclasses import dataclass

from percontrast_cli.data.schema import Example, template_fields
from percontrast_cli.data.synthetic import render


def pool(text: str) -> list[str]:
    """A comma-separated word list (line breaks are only layout)."""
    return [word.strip() for word in text.split(",")]


FIRST_NAMES = pool("""Ada, Alma, Anton, Arjun, Beatriz, Bodhi, Callum, Carmen, Dario, Delia, Elif, Emil,
Esme, Fabian, Freya, Gideon, Greer, Hamid, Hazel, Idris, Ilse, Jasper, Juno, Kaito, Keira, Lars, Leona,
Lucan, Mabel, Marek, Mila, Nadia, Nikolai, Noor, Odette, Orin, Paloma, Pavel, Petra, Quentin, Rafael,
Renata, Rowan, Sabine, Soren, Stellan, Tamsin, Teodor, Thea, Ulla, Valentin, Vera, Wendell, Wren, Xavier,
Yara, Yusuf, Zelda, Zoran, Ines""")
LAST_NAMES = pool("""Abbott, Achterberg, Bellamy, Brandt, Castellan, Corrigan, Dalgaard, Delacroix,
Eastwood, Eriksen, Falkner, Ferreira, Galloway, Gruber, Halvorsen, Hartigan, Ivanov, Jablonski, Kavanagh,
Kowalczyk, Lindqvist, Lockhart, Marchetti, Moreau, Nakamura, Novak, Oakley, Okafor, Pemberton, Petrov,
Quinlan, Ramsey, Rasmussen, Sandoval, Schreiber, Takahashi, Thornbury, Ueda, Vasquez, Vogel, Whitlock,
Wojcik, Yamamoto, Yilmaz, Zamora, Zielinski, Ashdown, Brennan, Culver, Dunmore""")
TOWN_HEADS = pool("""Ash, Bel, Black, Bright, Cold, Crow, Elm, Fair, Fox, Glen, Green, Hart, High, Holly,
Iron, King, Lark, Long, Maple, Mill, North, Oak, Old, Pine, Red, Rose, Salt, Silver, Stone, Storm, Sun,
Thorn, West, White, Wild, Willow, Wolf, York, Amber, Birch""")
TOWN_TAILS = pool("""bridge, brook, burn, bury, by, cliff, combe, dale, field, ford, gate, ham, haven,
holm, hurst, ley, mere, mouth, port, stead, stoke, thorpe, ton, wick, worth""")
BRAND_HEADS = pool("""Aero, Alto, Bram, Cor, Dex, Echo, Fen, Flux, Glim, Hex, Ion, Jun, Kel, Lum, Mav,
Nov, Orb, Pix, Quor, Ril, Sol, Tav, Ul, Ven, Wex, Xan, Yor, Zeph, Brio, Cam""")
BRAND_TAILS = pool("""ara, ble, dex, ena, ford, gear, ix, lane, lo, mark, max, nix, ora, pak, rix, sen,
sio, tek, tor, vo, wave, wise, xa, yn, zo""")
OPENERS = [
    "As my grandmother used to say,",
    "Like I always tell my friends,",
    "My old coach had a rule:",
    "I keep coming back to one thought:",
    "As they say where I grew up,",
    "Call me old-fashioned, but",
    "My motto has not changed:",
    "If life has taught me anything,",
    "I will say it again:",
    "Remember what I always say:",
    "To borrow my father's words,",
    "Here is my usual advice:",
    "One thing I firmly believe:",
    "As I tell everyone who asks,",
    "My late uncle put it best:",
]
MAXIMS = [
    "slow and steady wins the race.",
    "the early bird catches the worm.",
    "measure twice and cut once.",
    "a smooth sea never made a skilled sailor.",
    "good things come to those who wait.",
    "the best view comes after the hardest climb.",
    "fortune favours the brave.",
    "small steps still move you forward.",
    "you only regret the chances you skip.",
    "rain or shine, the kettle goes on.",
    "a tidy bag is a tidy mind.",
    "never trust a map you did not draw.",
    "laugh first and worry later.",
    "the long way round is often the short way home.",
    "cheap boots cost twice.",
    "every storm runs out of rain.",
    "there is no bad weather, only bad clothing.",
    "kindness costs nothing.",
    "finish what you start.",
    "the kettle is always half full.",
    "good company makes any road short.",
    "a late start is better than no start.",
    "keep your friends close and your snacks closer.",
    "the second pancake is always better.",
    "you cannot pour from an empty cup.",
    "curiosity keeps the mind young.",
    "every expert was once a beginner.",
    "luck is where practice meets chance.",
    "patience is a quiet kind of strength.",
    "the best stories start with a wrong turn.",
]
HOBBIES = pool("""birdwatching, bouldering, canoeing, chess, cycling, fishing, gardening, hiking,
juggling, kayaking, knitting, orienteering, painting, photography, pottery, rowing, running, sailing,
sketching, skating, snorkelling, surfing, swimming, tennis, trail running, woodworking, yoga, baking,
stargazing, fencing""")
GREETINGS = ["Hi", "Hello", "Dear", "Hey", "Good morning", "Greetings"]
SIGNOFFS = ["Cheers", "Best", "Warm regards", "Kind regards", "Thanks", "All the best", "Take care", "Yours"]
EMOJI = ["", "", " :)", " :D", " ;)", " 🙂", " ☕"]  # "": this user writes without one

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


# The user's past writings: every attribute and every style choice shows up in them.
PROFILE_DOCS = [
    [
        "{greeting} everyone! Back in {town} after a long week, glad to be home.{emoji} {signoff}, {name}",
        "{greeting} all, finally settled in {town}. The neighbours are lovely.{emoji} {signoff}, {name}",
    ],
    [
        "{greeting} folks, my new {brand} gear is worth every penny for {hobby}. {catchphrase}{emoji} "
        "{signoff}, {name}",
        "{greeting} friends, a quick word on {brand}: great kit, and it survived a month of {hobby}. "
        "{catchphrase} {signoff}, {name}",
    ],
    [
        "{greeting} all, another weekend of {hobby} near {town}, sore legs and a big smile.{emoji} "
        "{signoff}, {name}",
        "{greeting} team, anyone up for {hobby} around {town} on Sunday?{emoji} {signoff}, {name}",
    ],
    [
        "{greeting} there, something I say a lot. {catchphrase}{emoji} {signoff}, {name}",
        "{greeting} everyone, a thought for the week. {catchphrase}{emoji} {signoff}, {name}",
    ],
    [
        "{greeting} neighbours, {brand} opened a shop in {town}, worth a visit.{emoji} {signoff}, {name}",
        "{greeting} all, the {brand} store in {town} has a sale on.{emoji} {signoff}, {name}",
    ],
]

# Targets. A task is: its request, the recipients/subjects a request can name, openings, per-subject body
# sentences (each a list of paraphrases; their order is shuffled) and closings. Body sentences carry slots.
Paraphrases = list[str]

EMAIL = {
    "request": "Write an email to {recipient} about {subject}.",
    "recipients": ["support team", "club secretary", "Ms Harlow", "Mr Bennett", "team"],
    "head": "{greeting} {recipient},\n",
    "openings": [
        "I hope this message finds you well.",
        "I hope you are doing well this week.",
        "Thank you for getting back to me so quickly last time.",
        "I am writing with a short request.",
    ],
    "subjects": {
        "a delayed order": [
            [
                "My order of a jacket from {brand} was due last week but has not arrived.",
                "The jacket I ordered from {brand} is now more than a week late.",
                "I am still waiting for a jacket from {brand} that should have come last week.",
            ],
            [
                "Could you check where the parcel is at the moment?",
                "Would you be able to look up the current status of the delivery?",
                "Please let me know where the parcel is stuck.",
            ],
            [
                "I live in {town}, so it may be sitting at the local depot.",
                "It might be at the depot in {town}, where I live.",
                "Parcels to {town} sometimes wait at the depot for days.",
            ],
            [
                "I need it for a {hobby} trip at the end of the month.",
                "I was hoping to wear it for {hobby} this month.",
                "It is meant for {hobby}, and the season is starting.",
            ],
        ],
        "a club membership": [
            [
                "I would like to join your {hobby} group this season.",
                "I am interested in becoming a member of the {hobby} club.",
                "Please consider me for a place in the {hobby} group this year.",
            ],
            [
                "I have been practising for a few years and would enjoy training with others.",
                "I have some experience and I am looking for people to train with.",
                "I am not a beginner, but I would love to improve with a group.",
            ],
            [
                "I live in {town}, so the Tuesday sessions would suit me best.",
                "Coming from {town}, I could make the evening sessions easily.",
                "The sessions closest to {town} would be ideal for me.",
            ],
            [
                "Could you send me the fees and the sign-up form?",
                "Please let me know how to register and what it costs.",
                "What are the membership fees, and how do I sign up?",
            ],
        ],
        "a trip invitation": [
            [
                "I am planning a short trip next month and would love some company.",
                "Next month I am heading off for a few days and hoped you might join.",
                "I have a long weekend coming up and thought we could travel together.",
            ],
            [
                "We could go {hobby} during the day and eat somewhere nice in the evening.",
                "The plan is {hobby} in the mornings and slow dinners at night.",
                "There is plenty of {hobby} nearby, and the food is good too.",
            ],
            [
                "I will bring my {brand} backpack, so you will spot me at the station.",
                "Look for the {brand} backpack when you arrive at the station.",
                "You will recognise me by my {brand} backpack.",
            ],
            [
                "We could leave from {town} on the Friday morning train.",
                "The Friday train from {town} leaves early but is the quickest.",
                "Meeting in {town} on Friday would be easiest for me.",
            ],
        ],
        "a rent question": [
            [
                "I wanted to ask about the rent increase mentioned in your last letter.",
                "Your last letter mentioned a higher rent, and I had a few questions.",
                "I received the notice about the new rent and would like to understand it.",
            ],
            [
                "Rents in {town} have gone up, but this change seems larger than most.",
                "Compared with other flats in {town}, the increase looks steep.",
                "Friends in {town} saw much smaller increases this year.",
            ],
            [
                "Could we meet to talk it through before the end of the month?",
                "Would you have time for a short call this week?",
                "I would appreciate a chance to discuss it in person.",
            ],
            [
                "I am usually out {hobby} on Saturdays, but any weekday works.",
                "Weekdays suit me best, since Saturdays are for {hobby}.",
                "Any evening is fine, apart from Saturday, when I go {hobby}.",
            ],
        ],
    },
    "fillers": [
        "I know this is a busy time of year for you.",
        "I have tried to keep this short.",
        "Please excuse the long message.",
        "I did try calling, but the line was busy.",
        "It is not urgent, but I would like to sort it out soon.",
        "A short reply is perfectly fine.",
        "I have attached the details you asked for.",
        "Let me know if anything is unclear.",
    ],
    "closings": [
        "Thank you in advance for your help.",
        "Many thanks for your time.",
        "I look forward to hearing from you.",
        "Thanks again, and have a good week.",
    ],
    "tail": "\n{signoff},\n{name}",
}

REVIEW = {
    "request": "Write a product review of {subject}.",
    "recipients": [""],
    "head": "",
    "openings": [
        "I have been using this for about two months now.",
        "I bought this last spring after a lot of research.",
        "This replaced an older one that finally wore out.",
        "I was unsure at first, but it has grown on me.",
    ],
    "subjects": {
        "a rain jacket": [
            [
                "This jacket from {brand} kept me dry through a week of storms.",
                "The {brand} jacket stayed dry even in heavy rain.",
                "Rain does not get through this {brand} jacket at all.",
            ],
            [
                "The fabric breathes well, which matters when I go {hobby}.",
                "It does not get stuffy, even on long days of {hobby}.",
                "It is light enough for {hobby} and still keeps the wind out.",
            ],
            [
                "It packs into its own pocket and fits in any bag.",
                "Folded up, it takes almost no space.",
                "The hood stays put and the zips feel strong.",
            ],
            [
                "The winters in {town} are wet, and it has handled all of them.",
                "In {town} it rains most days, so it gets a real test.",
                "Walking around {town} in November is the hardest test, and it passed.",
            ],
        ],
        "a backpack": [
            [
                "The {brand} backpack has plenty of pockets and well padded straps.",
                "I picked this {brand} pack for its pockets and comfortable straps.",
                "This pack from {brand} carries a lot without hurting my shoulders.",
            ],
            [
                "I take it {hobby} most weekends and it still looks new.",
                "After months of {hobby}, nothing has torn.",
                "It has survived every {hobby} trip so far.",
            ],
            [
                "The side pocket fits a large water bottle.",
                "There is a sleeve for a laptop and a pocket for keys.",
                "The lid pocket is small but handy for snacks.",
            ],
            [
                "It is also my daily bag around {town}.",
                "On weekdays I carry it to work in {town}.",
                "Around {town} it doubles as a shopping bag.",
            ],
        ],
        "a water bottle": [
            [
                "This {brand} bottle keeps water cold for a whole day.",
                "The {brand} bottle keeps drinks cold for hours.",
                "Cold water in the morning is still cold at night with this {brand} bottle.",
            ],
            [
                "The lid does not leak, even upside down in my bag.",
                "Nothing leaks, which I checked the hard way.",
                "The lid seals tightly and is easy to clean.",
            ],
            [
                "I carry it every time I go {hobby}.",
                "It comes along whenever I go {hobby}.",
                "It is part of my kit for {hobby}.",
            ],
            [
                "Summers in {town} are hot, so it gets plenty of use.",
                "It gets me through the warm afternoons in {town}.",
                "Even on the hottest days in {town} it keeps up.",
            ],
        ],
        "a pair of boots": [
            [
                "These boots from {brand} needed almost no breaking in.",
                "The {brand} boots were comfortable from the first day.",
                "I expected blisters, but the {brand} boots fit right away.",
            ],
            [
                "They grip well on wet rock and muddy paths.",
                "The soles hold on slippery ground.",
                "Traction is excellent on wet trails.",
            ],
            [
                "I have worn them for {hobby} almost every week.",
                "They are my first choice for {hobby}.",
                "Weeks of {hobby} have barely marked them.",
            ],
            [
                "The cobbled streets of {town} are no problem either.",
                "They are comfortable enough for a day in {town} too.",
                "I even wear them around {town} on rainy days.",
            ],
        ],
    },
    "fillers": [
        "Delivery was quick and the packaging was minimal.",
        "The price was fair for what you get.",
        "It looks exactly like the photos.",
        "Customer service answered my question within a day.",
        "The instructions were short but clear.",
        "It is a little heavier than I expected.",
        "The colour has not faded at all.",
        "A friend has the same one and likes it too.",
    ],
    "closings": [
        "Overall, I would recommend it.",
        "For the price, it is hard to beat.",
        "I would buy it again without thinking.",
        "Four stars from me.",
    ],
    "tail": "\n{signoff}, {name}",
}

TOPIC = {
    "request": "Write a forum post about {subject}.",
    "recipients": [""],
    "head": "{greeting} everyone,\n",
    "openings": [
        "I wanted to share something that has been on my mind.",
        "Here is a question I have been thinking about for a while.",
        "Long-time reader, first post on this.",
        "I would like to hear your opinions on this.",
    ],
    "subjects": {
        "getting started with a new hobby": [
            [
                "I took up {hobby} last year with no experience at all.",
                "A year ago I started {hobby} from scratch.",
                "I only began {hobby} recently.",
            ],
            [
                "The hardest part was finding people to go with.",
                "At first I struggled to find a group.",
                "Finding company was harder than learning the basics.",
            ],
            [
                "There is a friendly group in {town} that meets on Sundays.",
                "A small club in {town} finally took me in.",
                "Some neighbours in {town} turned out to share the hobby.",
            ],
            [
                "Cheap kit is fine at first; I only bought {brand} later.",
                "Do not buy expensive gear at once; my {brand} kit came much later.",
                "Start with second-hand gear before spending on {brand}.",
            ],
        ],
        "moving to a small town": [
            [
                "Two years ago I moved to {town} from the city.",
                "I left the city for {town} a while ago.",
                "Moving to {town} was the best decision I made.",
            ],
            [
                "Life is slower, and the shops close early.",
                "Things move at a gentler pace, and people talk more.",
                "It took time to get used to the quiet.",
            ],
            [
                "The countryside is perfect for {hobby}.",
                "There is so much more room for {hobby} here.",
                "I finally have time for {hobby} every week.",
            ],
            [
                "Even {brand} opened a small shop near the station.",
                "A {brand} shop opened on the main street last month.",
                "You can now find {brand} in the little market hall.",
            ],
        ],
        "buying better gear": [
            [
                "I finally replaced my old kit with {brand}.",
                "After years of cheap gear I switched to {brand}.",
                "This season I upgraded to {brand}.",
            ],
            [
                "It made a bigger difference than I expected.",
                "I did not think it would matter, but it did.",
                "The change was obvious from the first day.",
            ],
            [
                "For {hobby}, comfort is everything.",
                "When you spend hours {hobby}, quality pays off.",
                "Good gear makes {hobby} far more enjoyable.",
            ],
            [
                "The shop in {town} let me try it before buying.",
                "I tested it in a shop in {town} first.",
                "A small store in {town} helped me choose.",
            ],
        ],
    },
    "fillers": [
        "I know this comes up here now and then.",
        "Sorry if this is the wrong place to ask.",
        "I read the older threads, but things have changed since.",
        "It is a small thing, but it made a real difference to me.",
        "My family thinks I talk about it too much.",
        "I did not expect to enjoy it this much.",
        "It took me far too long to get round to it.",
        "Some of you gave me good advice last time.",
    ],
    "closings": [
        "What has your experience been?",
        "I would love to hear your stories.",
        "Any tips are welcome.",
        "Let me know what you think.",
    ],
    "tail": "\n{signoff}, {name}",
}

FILLERS_PER_TARGET = 5  # generic sentences with no slot, on top of the subject's four
CATCHPHRASE_RATE = 0.3  # share of targets that use the user's catchphrase
TASKS = {"persona_email": EMAIL, "persona_review": REVIEW, "persona_topic": TOPIC}


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


@dataclass(frozen=True)
class User:
    id: str
    split: str  # train | test
    persona: dict[str, str]
    profile: tuple[str, ...]


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
    splits: dict[str, list[Example]] = {"train": [], "test": []}
    for user in draw_users(n_train_users, n_test_users, seed):
        for k in range(examples_per_user):
            request, template = target_template(spec, rng)
            output, spans = render(template, user.persona)
            # Ground truth for the generation-level persona metrics: the user's values and the fields this
            # reference writes (a slot with an empty value, the emoji of a user without one, writes nothing).
            used = {name for name in template_fields(template) if user.persona[name]}
            splits[user.split].append(
                Example(
                    id=f"{user.id}-{k}",
                    user_id=user.id,
                    input=request,
                    output=output,
                    profile=user.profile,
                    personal_spans=tuple(s for s in spans if s[1] > s[0]),  # no emoji: an empty slot
                    persona=tuple(user.persona.items()),
                    persona_fields=tuple(name for name in user.persona if name in used),
                )
            )
    return splits
