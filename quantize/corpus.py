"""A deterministic, seeded generator of simple children's stories: the text edgekit's default model learns.

Every word comes from the small lexicon in this file; no third-party text is used. A story has a cast (a
hero and a friend, each a child or an animal with a name and pronouns), a home and a favourite thing, and
a small arc: an opening, a problem (a lost toy, a friend stuck up high, a storm, a fear, a quarrel over a
toy, a surprise to prepare), dialogue, a search or an attempt, a resolution and a closing line.

Story `i` of seed `s` is drawn from its own random stream (SplitMix64 seeded from `s` and `i`), so any range
of stories can be generated on its own, identically on every platform and Python version: held-out text
is simply a range of indices that training never reads. `GENERATOR_VERSION` changes whenever the output
for a given seed changes.

    text = generate_corpus(seed=7, start=0, count=1000)   # stories separated by <|endoftext|>
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from edgekit.quantize.evaluate import DOCUMENT_SEPARATOR

GENERATOR_NAME = "edgekit-stories"
GENERATOR_VERSION = 1

_MASK = (1 << 64) - 1


def mix64(value: int) -> int:
    """SplitMix64's finaliser: a well-mixed 64-bit hash of a 64-bit integer."""
    z = value & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class StoryRandom:
    """SplitMix64 (Steele, Lea and Flood 2014): a tiny PRNG whose output is fixed by its definition, unlike
    `random.Random` methods, which may change between Python versions."""

    def __init__(self, seed: int):
        self.state = seed & _MASK

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        return mix64(self.state)

    def below(self, n: int) -> int:
        """A uniform integer in [0, n) (rejection sampling, no modulo bias)."""
        limit = ((1 << 64) // n) * n
        while True:
            value = self.next_u64()
            if value < limit:
                return value % n

    def choice(self, items: Sequence):
        return items[self.below(len(items))]

    def chance(self, percent: int) -> bool:
        return self.below(100) < percent

    def sample(self, items: Sequence, k: int) -> list:
        """k distinct items in random order (a partial Fisher-Yates shuffle)."""
        pool = list(items)
        for i in range(k):
            j = i + self.below(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]


def story_random(seed: int, index: int) -> StoryRandom:
    """The random stream of story `index` under corpus seed `seed`."""
    return StoryRandom(mix64(mix64(seed) ^ mix64(index + 0x5DEECE66D)))


# -- lexicon -------------------------------------------------------------------------------------------------

GIRLS = ("Lily", "Mia", "Emma", "Sara", "Anna", "Zoe", "Lucy", "Ella", "Rosa", "Nina", "Ivy", "Kate", "Maya", "Ruby")
BOYS = ("Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Noah", "Finn", "Owen", "Jake", "Eli", "Dan", "Hugo")
ANIMALS = ("cat", "dog", "bunny", "bear", "bird", "fox", "duck", "frog", "mouse", "owl", "pig", "lamb", "puppy",
           "kitten", "squirrel", "turtle")
ANIMAL_NAMES = ("Spot", "Fluffy", "Pip", "Coco", "Bella", "Rex", "Daisy", "Milo", "Buttons", "Sunny", "Pebble",
                "Whiskers", "Honey", "Bubbles")
ADJECTIVES = ("little", "happy", "kind", "curious", "brave", "shy", "funny", "clever", "small", "gentle", "silly",
              "friendly")
TOYS = ("ball", "kite", "doll", "teddy bear", "toy car", "red hat", "blue boat", "drum", "yellow truck", "book",
        "puzzle", "toy train", "scarf", "shiny stone", "little robot", "paper plane")
COLORS = ("red", "blue", "green", "yellow", "pink", "purple", "orange", "white")
PLACES = ("park", "garden", "forest", "beach", "farm", "meadow", "yard", "hill", "pond", "playground")
AT_PLACE = {"beach": "on the beach", "farm": "on the farm", "hill": "on the hill", "pond": "by the pond",
            "playground": "at the playground"}
HOMES = ("a small house", "a big house", "a cozy home", "a little village", "a quiet town", "a house by the sea",
         "a farm", "a tree house")
ACTIVITIES = ("play", "run", "sing", "dance", "jump", "draw", "read", "explore", "climb", "swim", "build things",
              "pick flowers")
HIDING_SPOTS = ("under the bed", "behind the door", "in the toy box", "under the table", "near the tree",
                "behind the sofa", "in the grass", "under a big leaf", "by the pond", "in the kitchen",
                "next to the swing", "under a pile of leaves")
HIGH_PLACES = ("a tall tree", "the roof", "a high wall", "a big rock", "the top of the fence")
FOODS = ("cake", "cookies", "pie", "soup", "sandwiches", "pancakes", "muffins", "fruit salad")
FAMILY = ("mom", "dad", "grandma", "grandpa")
FEARS = ("the dark", "the big dog next door", "the loud thunder", "the deep water", "the tall slide")
FEELINGS = ("happy", "glad", "proud", "excited", "thankful")
TIMES = ("One day", "One sunny morning", "One morning", "One afternoon", "One rainy day", "One evening")


@dataclass(frozen=True)
class Character:
    """A story character: how the text names it and its pronouns."""

    name: str
    kind: str
    subject: str     # he / she
    object: str      # him / her
    possessive: str  # his / her

    @property
    def Subject(self) -> str:  # noqa: N802 - sentence-initial form
        return self.subject.capitalize()

    @property
    def Possessive(self) -> str:  # noqa: N802 - sentence-initial form
        return self.possessive.capitalize()


def article(word: str) -> str:
    """'a' or 'an' before `word`, with the word."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def make_character(rng: StoryRandom, avoid: str = "") -> Character:
    """A child (girl or boy) or a named animal, whose name differs from `avoid`."""
    while True:
        roll = rng.below(3)
        if roll == 0:
            person = Character(rng.choice(GIRLS), "girl", "she", "her", "her")
        elif roll == 1:
            person = Character(rng.choice(BOYS), "boy", "he", "him", "his")
        else:
            she = rng.chance(50)
            person = Character(rng.choice(ANIMAL_NAMES), rng.choice(ANIMALS), "she" if she else "he",
                               "her" if she else "him", "her" if she else "his")
        if person.name != avoid:
            return person


@dataclass(frozen=True)
class Cast:
    """Everything a story's sentences refer to."""

    hero: Character
    friend: Character
    toy: str
    place: str
    home: str
    family: str

    @property
    def at_place(self) -> str:
        """'in the park', 'on the beach', ...: where things happen at the story's place."""
        return AT_PLACE.get(self.place, f"in the {self.place}")


# -- story parts ---------------------------------------------------------------------------------------------

def opening(rng: StoryRandom, c: Cast) -> list[str]:
    h = c.hero
    first = rng.choice((
        f"Once upon a time, there was {article(rng.choice(ADJECTIVES))} {h.kind} named {h.name}.",
        f"Once upon a time, {article(rng.choice(ADJECTIVES))} {h.kind} called {h.name} lived in {c.home}.",
        f"There once was {article(rng.choice(ADJECTIVES))} {h.kind} named {h.name}.",
        f"{h.name} was {article(rng.choice(ADJECTIVES))} {h.kind} who lived in {c.home}.",
    ))
    likes = rng.choice((
        f"{h.Subject} loved to {rng.choice(ACTIVITIES)} {c.at_place}.",
        f"{h.Subject} liked to {rng.choice(ACTIVITIES)} with {h.possessive} {c.family}.",
        f"Every day, {h.subject} went to the {c.place} to {rng.choice(ACTIVITIES)}.",
    ))
    toy = f"{h.name} had {article(c.toy)} that {h.subject} loved very much."
    friend = rng.choice((
        f"{h.Possessive} best friend was {article(c.friend.kind)} named {c.friend.name}.",
        f"{h.Subject} had a friend, {article(c.friend.kind)} named {c.friend.name}.",
    ))
    return [first, likes] + ([toy] if rng.chance(60) else []) + [friend]


def lost_toy(rng: StoryRandom, c: Cast) -> list[str]:
    h, f = c.hero, c.friend
    spots = rng.sample(HIDING_SPOTS, 3)
    return [
        f"{rng.choice(TIMES)}, {h.name} could not find {h.possessive} {c.toy}.",
        f"\"Oh no! Where is my {c.toy}?\" {h.subject} said. {h.Subject} was very sad.",
        f"{f.name} said, \"Do not worry, {h.name}. I will help you look for it.\"",
        f"They looked {spots[0]}. They looked {spots[1]}. But the {c.toy} was not there.",
        rng.choice((f"Then {f.name} had an idea. \"Let us look {spots[2]}!\"",
                    f"Then {h.name} saw something {spots[2]}.")),
        f"There it was! The {c.toy} was {spots[2]}.",
        f"{h.name} was so {rng.choice(FEELINGS)}. \"Thank you, {f.name}!\" {h.subject} said, and gave "
        f"{f.object} a big hug.",
    ]


def stuck_friend(rng: StoryRandom, c: Cast) -> list[str]:
    h, f = c.hero, c.friend
    high = rng.choice(HIGH_PLACES)
    return [
        f"{rng.choice(TIMES)}, {h.name} and {f.name} went to the {c.place}.",
        f"{f.name} climbed up {high}, but then {f.subject} could not get down.",
        f"\"Help! I am stuck!\" cried {f.name}. {f.Subject} was scared.",
        f"{h.name} wanted to help. {h.Subject} thought and thought.",
        rng.choice((f"{h.Subject} ran home and asked {h.possessive} {c.family} for help.",
                    f"{h.Subject} found a long ladder and put it next to {high}.")),
        f"Slowly, {f.name} came down, one step at a time.",
        f"\"You are a good friend, {h.name},\" said {f.name}. They were both very {rng.choice(FEELINGS)}.",
    ]


def storm(rng: StoryRandom, c: Cast) -> list[str]:
    h, f = c.hero, c.friend
    return [
        f"{rng.choice(TIMES)}, {h.name} and {f.name} were playing {c.at_place}.",
        "Then the sky became dark, and the wind began to blow.",
        f"\"A storm is coming!\" said {h.name}. \"We have to go home.\"",
        f"They ran as fast as they could. The rain fell on their heads, and {f.name} dropped "
        f"{f.possessive} {rng.choice(TOYS)}.",
        f"{h.name} stopped and picked it up for {f.object}.",
        f"At home, {h.possessive} {c.family} gave them warm {rng.choice(FOODS)} and a soft blanket.",
        f"They watched the rain from the window. \"I am glad we are safe,\" said {f.name}.",
    ]


def fear(rng: StoryRandom, c: Cast) -> list[str]:
    h, f = c.hero, c.friend
    scary = rng.choice(FEARS)
    return [
        f"{h.name} was afraid of {scary}.",
        f"{rng.choice(TIMES)}, {h.subject} told {f.name}, \"I am scared of {scary}.\"",
        f"{f.name} said, \"It is okay to be scared. I will stay with you.\"",
        f"So they faced {scary} together. {h.name} held {f.name}'s hand.",
        f"It was not so bad after all. {h.name} smiled.",
        f"\"I was brave!\" said {h.name}. {h.Possessive} {c.family} was very {rng.choice(('proud', 'happy'))}.",
    ]


def quarrel(rng: StoryRandom, c: Cast) -> list[str]:
    h, f = c.hero, c.friend
    return [
        f"{rng.choice(TIMES)}, {h.name} and {f.name} both wanted to play with the {c.toy}.",
        f"\"It is mine!\" said {h.name}. \"No, I want it!\" said {f.name}.",
        "They pulled and pulled, and they were both angry.",
        f"Then {h.possessive} {c.family} came and said, \"Why do you not take turns?\"",
        f"{h.name} thought about it. \"You can play first,\" {h.subject} said to {f.name}.",
        f"{f.name} smiled. Soon they were playing with the {c.toy} together, and it was more fun.",
    ]


def surprise(rng: StoryRandom, c: Cast) -> list[str]:
    h, f = c.hero, c.friend
    food, color = rng.choice(FOODS), rng.choice(COLORS)
    return [
        f"{rng.choice(TIMES)}, {h.name} remembered that it was {h.possessive} {c.family}'s birthday.",
        f"\"Let us make a surprise!\" {h.subject} said to {f.name}.",
        f"They made {food} in the kitchen and drew {article(color)} card.",
        "It was a little messy, but they worked hard."
        + rng.choice(("", f" {f.name} got flour on {f.possessive} nose, and they both laughed.")),
        f"When {h.possessive} {c.family} came home, they shouted, \"Surprise!\"",
        f"{h.Possessive} {c.family} was so {rng.choice(FEELINGS)}. \"This is the best gift ever,\" "
        f"{'she' if c.family in ('mom', 'grandma') else 'he'} said.",
    ]


PROBLEMS: tuple[Callable[[StoryRandom, Cast], list[str]], ...] = (lost_toy, stuck_friend, storm, fear, quarrel,
                                                                 surprise)
LESSONS = ("friends help each other", "it is good to share", "being brave is easier with a friend",
           "kindness makes everyone happy", "it is good to ask for help", "working together is fun")


def ending(rng: StoryRandom, c: Cast) -> list[str]:
    h, f = c.hero, c.friend
    return [rng.choice((
        f"From that day on, {h.name} and {f.name} were the best of friends.",
        f"{h.name} learned that {rng.choice(LESSONS)}.",
        f"That night, {h.name} went to bed with a big smile.",
        f"And {h.name} and {f.name} played {c.at_place} until the sun went down.",
    ))]


def generate_story(seed: int, index: int) -> str:
    """Story `index` of the corpus with seed `seed`: one paragraph of plain text."""
    rng = story_random(seed, index)
    hero = make_character(rng)
    cast = Cast(hero=hero, friend=make_character(rng, avoid=hero.name), toy=rng.choice(TOYS),
                place=rng.choice(PLACES), home=rng.choice(HOMES), family=rng.choice(FAMILY))
    sentences = opening(rng, cast) + rng.choice(PROBLEMS)(rng, cast) + ending(rng, cast)
    return " ".join(sentences)


def generate_stories(seed: int, start: int, count: int) -> list[str]:
    """Stories `start` ... `start + count - 1` of the corpus with seed `seed`."""
    return [generate_story(seed, index) for index in range(start, start + count)]


def generate_corpus(seed: int, start: int, count: int) -> str:
    """Those stories as one text, separated by `<|endoftext|>` (the separator `evaluate.py` splits at)."""
    return f"\n{DOCUMENT_SEPARATOR}\n".join(generate_stories(seed, start, count)) + "\n"
