"""Build the lab's task: 3-way sentiment of short product reviews (negative / neutral / positive).

Reviews are composed from hand-written clauses about real product aspects (quality, price,
delivery, noise, battery, service...). What makes it not trivial: contrasts ("looks great, but
broke in a week" is negative), lukewarm neutral reviews that borrow words from both sides, and
negations ("not bad at all"). Deterministic: `python data/reviews/build.py` rewrites
train.jsonl / test.jsonl byte for byte (80/20 split by a seeded shuffle).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240611
PER_LABEL = 160
LABELS = ("negative", "neutral", "positive")

PRODUCTS = [
    "this headset", "this blender", "this pair of running shoes", "this phone case", "the desk lamp",
    "this coffee grinder", "the backpack", "this kettle", "the keyboard", "this air fryer",
    "the yoga mat", "this vacuum", "the water bottle", "this tent", "the office chair",
    "this electric toothbrush", "the board game", "this webcam", "the rice cooker", "this hair dryer",
    "the bike light", "this mattress topper", "the wireless mouse", "this frying pan", "the smartwatch",
    "this baby monitor", "the garden hose", "this suitcase", "the bluetooth speaker", "this space heater",
]

POSITIVE = [
    "works exactly as described", "feels solid and well made", "was worth every penny",
    "arrived a day early and well packed", "has held up after months of daily use",
    "is much quieter than my old one", "looks even better in person", "exceeded my expectations",
    "has a battery that lasts all week", "took five minutes to set up", "is the best purchase I made this year",
    "is so comfortable I forget I'm using it", "does everything I need and more",
    "came with clear instructions", "heats up in seconds", "is light but surprisingly sturdy",
    "still looks brand new after a year", "made my mornings so much easier",
    "got a replacement part from customer service within a day", "is a real bargain at this price",
    "is not bad at all, honestly better than the expensive brands", "has not given me a single problem",
    "cleans up in no time", "fits perfectly", "is a joy to use",
]

NEGATIVE = [
    "stopped working after two weeks", "arrived with a cracked lid", "feels flimsy and cheap",
    "came with useless instructions", "is far louder than advertised", "was a complete waste of money",
    "smells like burnt plastic", "looks nothing like the photos", "broke the first time I used it",
    "has a battery that barely lasts an hour", "is not worth half the price", "leaks every single time",
    "overheats after ten minutes", "fell apart within a month", "never connected to my phone properly",
    "scratches if you so much as look at it", "is much smaller than the listing suggests",
    "keeps disconnecting for no reason", "has a seam that split on day three",
    "got no answer from customer service after three emails", "rattles constantly",
    "is not what I hoped for at all", "is uncomfortable after ten minutes", "took a month to arrive",
    "has buttons that stick",
]

NEUTRAL = [
    "does the job, nothing more", "is about what you'd expect for the price",
    "works fine but is nothing special", "is okay", "is average in every way",
    "is fine for occasional use", "neither impressed nor disappointed me",
    "does what it says on the box", "is decent if you don't expect much",
    "is similar to every other one I've owned", "is acceptable for a backup",
    "is pretty ordinary", "is fine, I suppose", "is adequate for the basics",
    "is a middle-of-the-road option", "gets the job done most of the time",
    "is alright once you get used to it", "is reasonable, though not remarkable",
    "hasn't changed my life but hasn't let me down either", "is serviceable",
]

POSITIVE_VERDICTS = [
    "Highly recommend.", "Five stars.", "Would buy again without hesitation.", "Love it.",
    "Already ordered a second one as a gift.", "Very happy with it.", "No regrets.",
    "I was skeptical, but it won me over.", "Couldn't be happier.",
]
NEGATIVE_VERDICTS = [
    "Returning it.", "Avoid.", "One star.", "Would not buy again.", "Save your money.",
    "Very disappointed.", "I want a refund.", "Do not recommend.", "Regret buying it.",
]
NEUTRAL_VERDICTS = [
    "Three stars.", "It's fine.", "Meh.", "Mixed feelings.", "Not bad, not great.",
    "You could do better, you could do worse.", "It'll do for now.", "Fair enough for the money.",
    "Hard to get excited about it.",
]

OPENERS = [
    "", "", "", "Bought this for my dad. ", "Second week of using it. ", "Ordered on a whim. ",
    "Got it on sale. ", "Replacing an old one. ", "Update after a month. ", "Gift for my partner. ",
]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _review(rng: random.Random, label: str) -> str:
    product = rng.choice(PRODUCTS)
    opener = rng.choice(OPENERS)
    shape = rng.random()
    if label == "positive":
        clauses, verdicts, contrast = POSITIVE, POSITIVE_VERDICTS, NEGATIVE
    elif label == "negative":
        clauses, verdicts, contrast = NEGATIVE, NEGATIVE_VERDICTS, POSITIVE
    else:
        clauses, verdicts, contrast = NEUTRAL, NEUTRAL_VERDICTS, None

    if label == "neutral" and shape < 0.3:
        # the classic lukewarm review: one good point, one bad point, a shrug
        good, bad = rng.choice(POSITIVE), rng.choice(NEGATIVE)
        first, second = (good, bad) if rng.random() < 0.5 else (bad, good)
        return f"{opener}{_cap(product)} {first}, but it also {second}. {rng.choice(NEUTRAL_VERDICTS)}"
    if contrast is not None and shape < 0.3:
        # a contrast whose second half decides the label
        return f"{opener}{_cap(product)} {rng.choice(contrast)}, but overall it {rng.choice(clauses)}. {rng.choice(verdicts)}"
    if shape < 0.65:
        first, second = rng.sample(clauses, 2)
        return f"{opener}{_cap(product)} {first} and {second}."
    if shape < 0.85:
        return f"{opener}{_cap(product)} {rng.choice(clauses)}. {rng.choice(verdicts)}"
    return f"{rng.choice(verdicts)} {_cap(product)} {rng.choice(clauses)}."


def build() -> tuple[list[dict], list[dict]]:
    """Return (train, test): PER_LABEL unique reviews per label, shuffled, split 80/20."""
    rng = random.Random(SEED)
    rows: list[dict] = []
    seen: set[str] = set()
    for label in LABELS:
        count = 0
        while count < PER_LABEL:
            text = _review(rng, label)
            if text in seen:
                continue
            seen.add(text)
            rows.append({"text": text, "label": label})
            count += 1
    rng.shuffle(rows)
    n_train = int(0.8 * len(rows))
    return rows[:n_train], rows[n_train:]


def main() -> None:
    train, test = build()
    for name, rows in (("train", train), ("test", test)):
        with open(HERE / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(train)} train / {len(test)} test reviews to {HERE}")


if __name__ == "__main__":
    main()
