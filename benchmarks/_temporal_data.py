"""A generated temporal agent-memory collection (fixed seed): people moving, changing jobs and
preferences, correcting and retracting what they said, over multi-session dialogues; questions
whose gold answers are the facts valid at a given time.

Each person talks to the agent in sessions a few weeks apart. A session has chit-chat and, now
and then, an event: a move (city), a job change (employer), a new favourite food, taking up or
dropping a hobby (a retraction: "I stopped ..."), or a correction of something said earlier ("I
misspoke last time: it's X, not Y"). Every turn is an utterance with the time it was said.

The collection is given two ways, for the two ways an agent keeps memory:

- ``facts``: one atom per (person, attribute), written with aether's bitemporal operations --
  a change is an upsert valid from the change, a retraction closes the valid interval, a
  correction rewrites the earlier period (``correct``), chit-chat turns are plain atoms;
- ``log``: every utterance as its own atom, valid from when it was said (what a memory without
  fact extraction stores).

Questions ("Where does Alice live?") carry a ``valid_at`` and, for some, an ``as_of`` (what the
agent knew then). Gold: in ``facts``, the (atom, version) valid at ``valid_at`` as known at
``as_of``; in ``log``, the latest utterance said by ``valid_at`` that states the value true then.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

NAMES = ["Alice", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal",
         "Lucia", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tamar", "Umar", "Vera",
         "Wes", "Xiu", "Yusuf", "Zoe", "Amara", "Bjorn", "Celine", "Diego"]
CITIES = ["Lisbon", "Berlin", "Osaka", "Toronto", "Nairobi", "Lima", "Oslo", "Seoul", "Dublin", "Porto", "Krakow",
          "Austin", "Marseille", "Hanoi", "Tbilisi", "Quito", "Adelaide", "Bergen", "Cork", "Leipzig"]
COMPANIES = ["Initech", "Globex", "Umbrella Labs", "Hooli", "Vandelay Industries", "Stark Freight", "Wayne Biotech",
             "Acme Robotics", "Soylent Foods", "Tyrell Systems", "Cyberdyne Health", "Massive Dynamic",
             "Oscorp Energy", "Aperture Optics", "Wonka Confections"]
FOODS = ["ramen", "paella", "pierogi", "tacos", "sushi", "falafel", "risotto", "pho", "khachapuri", "ceviche",
         "goulash", "dumplings", "moussaka", "bibimbap", "empanadas"]
HOBBIES = ["climbing", "pottery", "chess", "sailing", "running", "painting", "birdwatching", "fencing", "baking",
           "surfing", "knitting", "photography"]
CHAT = ["The weather has been strange lately.", "I watched a documentary about octopuses last night.",
        "My sister is visiting next month.", "I need to renew my passport soon.", "Traffic was terrible today.",
        "I'm reading a long novel about a lighthouse keeper.", "We had a power cut yesterday evening.",
        "I finally fixed the squeaky door.", "My phone battery dies so fast now.", "I tried a new podcast.",
        "The neighbours adopted a puppy.", "I have a dentist appointment on Friday."]

# Two phrasings per statement kind: questions never reuse a statement's words verbatim.
SAY = {
    "city": ["I live in {v} now.", "Home is {v} these days.", "I just moved to {v}."],
    "employer": ["I work at {v}.", "I started a new job at {v}.", "My employer is {v} now."],
    "food": ["My favourite food is {v}.", "Lately I can't get enough {v}.", "{v} is my favourite dish now."],
    "hobby": ["I took up {v}.", "I spend my weekends on {v} now.", "My new hobby is {v}."],
}
STOP_HOBBY = ["I stopped {v}, no time for it anymore.", "I gave up {v}."]
CORRECT = "I misspoke last time: it's {v}, not {old}."
ASK = {
    "city": ["Where does {n} live?", "Which city is {n} based in?"],
    "employer": ["Where does {n} work?", "Which company employs {n}?"],
    "food": ["What is {n}'s favourite food?", "Which dish does {n} like most?"],
    "hobby": ["What hobby does {n} have?", "What does {n} do for fun?"],
}
VALUES = {"city": CITIES, "employer": COMPANIES, "food": FOODS, "hobby": HOBBIES}
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class Utterance:
    person: str
    at: datetime
    text: str
    #: (attribute, value) this turn states as true from ``at`` (None: chit-chat or a retraction).
    states: tuple[str, str] | None = None
    #: For a correction: the time the corrected statement was made (its period is rewritten).
    corrects_from: datetime | None = None
    #: For a retraction: the attribute that stops holding at ``at``.
    retracts: str | None = None


@dataclass
class Question:
    person: str
    attribute: str
    text: str
    valid_at: datetime
    #: ``None``: what the agent knows now; else the agent's knowledge at that (past) moment.
    as_of_said: datetime | None
    #: The value true at ``valid_at`` as known at ``as_of_said`` (the gold answer's content).
    value: str
    #: Index (in :attr:`Collection.utterances`) of the statement whose fact version is the gold
    #: answer in the ``facts`` memory (a correction, when one rewrote the period).
    facts_gold: int
    #: Index of the gold utterance for the ``log`` memory (-1: the log cannot know the answer at
    #: ``valid_at``, e.g. a correction said later rewrote that period; such questions score facts only).
    log_gold: int


@dataclass
class Collection:
    seed: int
    utterances: list[Utterance] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


def generate(seed: int = 17, people: int = 30, sessions: int = 10, questions_per_person: int = 10) -> Collection:
    """The collection for ``seed`` (deterministic)."""
    rng = random.Random(seed)
    col = Collection(seed)
    for name in NAMES[:people]:
        t = T0 + timedelta(days=rng.randint(0, 20), hours=rng.randint(8, 20))
        current: dict[str, str | None] = {}
        said_at: dict[str, datetime] = {}
        for s in range(sessions):
            turns: list[Utterance] = []
            kinds = ["city", "employer", "food", "hobby"] if s == 0 else \
                rng.sample(["city", "employer", "food", "hobby", "correct", "stop", "chat", "chat"], rng.randint(1, 3))
            for kind in kinds:
                t += timedelta(minutes=rng.randint(1, 9))
                if kind == "chat":
                    turns.append(Utterance(name, t, f"{name}: {rng.choice(CHAT)}"))
                elif kind == "stop":
                    v = current.get("hobby")
                    if v:
                        turns.append(Utterance(name, t, f"{name}: " + rng.choice(STOP_HOBBY).format(v=v),
                                               retracts="hobby"))
                        current["hobby"] = None
                elif kind == "correct":
                    attr = rng.choice(["city", "employer", "food"])
                    old = current.get(attr)
                    if old:
                        v = rng.choice([x for x in VALUES[attr] if x != old])
                        turns.append(Utterance(name, t, f"{name}: " + CORRECT.format(v=v, old=old), states=(attr, v),
                                               corrects_from=said_at[attr]))
                        current[attr] = v
                else:
                    v = rng.choice([x for x in VALUES[kind] if x != current.get(kind)])
                    turns.append(Utterance(name, t, f"{name}: " + rng.choice(SAY[kind]).format(v=v), states=(kind, v)))
                    current[kind] = v
                    said_at[kind] = t
            for _ in range(rng.randint(1, 2)):  # small talk in every session
                t += timedelta(minutes=rng.randint(1, 9))
                turns.append(Utterance(name, t, f"{name}: {rng.choice(CHAT)}"))
            col.utterances.extend(turns)
            t += timedelta(days=rng.randint(10, 40), hours=rng.randint(-3, 3))
    col.utterances.sort(key=lambda u: u.at)
    _questions(col, rng, questions_per_person)
    return col


def truth(col: Collection, person: str, attr: str, valid_at: datetime, known_at: datetime | None
          ) -> tuple[str | None, int | None, int | None]:
    """``(value, facts gold, log gold)`` (utterance indexes) for ``attr`` of ``person`` at ``valid_at``,
    from the utterances said by ``known_at`` (default: all): a correction rewrites the period of the
    statement it corrects, a retraction ends the attribute."""
    value: str | None = None
    gold: int | None = None
    periods: list[tuple[datetime, str, int]] = []  # (from, value, utterance index) as finally believed
    for i, u in enumerate(col.utterances):
        if u.person != person or (known_at is not None and u.at > known_at):
            continue
        if u.retracts == attr:
            periods.append((u.at, "", i))
        elif u.states is not None and u.states[0] == attr:
            start = u.corrects_from if u.corrects_from is not None else u.at
            periods = [p for p in periods if p[0] < start] + [(start, u.states[1], i)]
    for start, v, i in periods:
        if start <= valid_at:
            value, gold = (v or None), (i if v else None)
    # The log memory can only know what was said by valid_at: its gold is the latest statement said
    # by then that states the value (a correction said later is not in the log yet at valid_at).
    log_gold = None
    if value is not None:
        said = [i for i, u in enumerate(col.utterances)
                if u.person == person and u.at <= valid_at and (known_at is None or u.at <= known_at)
                and u.states == (attr, value)]
        log_gold = said[-1] if said else None
    return value, gold, log_gold


def _questions(col: Collection, rng: random.Random, per_person: int) -> None:
    end = max(u.at for u in col.utterances)
    for name in NAMES[: len({u.person for u in col.utterances})]:
        mine = [u for u in col.utterances if u.person == name]
        made = 0
        tries = 0
        while made < per_person and tries < 200:
            tries += 1
            attr = rng.choice(list(ASK))
            valid_at = mine[0].at + (end - mine[0].at) * rng.random()
            as_of = None if rng.random() < 0.7 else valid_at + timedelta(days=rng.randint(0, 60))
            if as_of is not None and as_of >= end:
                as_of = None
            value, gold, log_gold = truth(col, name, attr, valid_at, as_of)
            if value is None or gold is None:
                continue
            col.questions.append(Question(name, attr, rng.choice(ASK[attr]).format(n=name), valid_at, as_of,
                                          value, gold, -1 if log_gold is None else log_gold))
            made += 1
