"""Words for the write task and the attribute combinations the test split holds out."""

from __future__ import annotations

# 367 common English words of 3-8 lowercase letters, in a fixed order, without repeats.
WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        """
    apple river house green stone cloud light water paper table chair music dream smile
    bread heart horse night earth plant ocean quiet happy sunny storm brave candle window
    garden forest yellow silver purple orange winter summer spring autumn market castle
    bridge rocket planet travel family friend school letter number animal flower butter
    coffee pencil button ticket circle square corner street island valley desert meadow
    harbor tunnel ladder mirror basket bottle hammer rabbit turtle monkey kitten puppy
    tiger zebra camel eagle whale shark snake mouse sheep goat duck goose crow frog bear
    wolf deer lion fish bird tree leaf rose seed root rain snow wind fire gold iron salt
    milk cake rice soup corn bean lamp door road hill lake pond farm boat ship train
    plane truck bike ball kite drum bell book card gift ring coin rope sock shoe coat
    hat bag box cup pan pot key map pen cat dog cow pig owl bee ant fox sun sky sea ice
    tea egg jam pie toy art joy hope love calm kind bold warm cold fast slow tall wide
    deep soft hard open close north south east west left right above below inside
    outside early late morning evening noon today dance sing read write paint build
    travel swim climb jump catch throw sleep wake laugh cheer hello thanks please maybe
    always never simple little giant tiny huge bright dark sweet sour bitter fresh
    clean empty full heavy honest gentle proud lucky magic secret silent golden wooden
    frozen hidden broken famous modern ancient cosmic crystal diamond emerald garnet
    marble velvet cotton linen denim leather paddle saddle cradle puzzle riddle
    pickle muffin waffle noodle pepper ginger lemon mango melon peach grape cherry
    olive onion carrot potato tomato radish celery walnut almond cashew peanut honey
    sugar flour cream cheese yogurt pizza pasta salad sauce spoon fork knife plate bowl
    glass jug kettle oven stove sink towel soap brush comb clock watch radio phone
    camera screen laptop mouse cable socket switch engine motor wheel pedal anchor
    sail mast deck cabin tent camp trail summit canyon glacier volcano thunder breeze
    shadow sunset sunrise rainbow comet galaxy orbit moon star stage actor poet
    singer hunter farmer baker doctor nurse pilot sailor driver player winner leader
    """.split()
    )
)

# Words seen only in the test split: every tenth word of WORDS, about 10 % of them.
HELD_OUT_WORDS: frozenset[str] = frozenset(WORDS[9::10])
TRAIN_WORDS: tuple[str, ...] = tuple(w for w in WORDS if w not in HELD_OUT_WORDS)

# (shape, colour) pairs that appear only in the test split, one per shape.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("circle", "green"),
        ("square", "purple"),
        ("triangle", "blue"),
        ("diamond", "orange"),
        ("star", "red"),
        ("cross", "cyan"),
    }
)


def pair_allowed(shape: str, colour: str, split: str) -> bool:
    """True if an object of this shape and colour may appear in `split`."""
    return split == "test" or (shape, colour) not in HELD_OUT_PAIRS


def words_for(split: str) -> tuple[str, ...]:
    """The vocabulary a split draws its words from (the test split adds the held-out ones)."""
    return WORDS if split == "test" else TRAIN_WORDS
