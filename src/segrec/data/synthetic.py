"""Planted-segment synthetic data: the built-in testbed of ``segrec run``.

The generator plants exactly the structure a segment-aware recommender should
find and exploit, so that a gain (or its absence) has a known cause:

* **segments with distinct tastes** — each segment prefers a few item
  categories (a softmax over category logits), and users within a segment vary
  through a personal favourite category;
* **segment-specific sequences** — each segment has its own Markov transition
  table over items (every item has a few successors per segment), so the same
  recent item leads to different next items in different segments: a
  segment-adapted sequential model can beat one global model;
* **power laws** — Zipf item popularity (within each category) and Lomax
  (Pareto II) user activity with a floor of ``min_interactions``;
* **drift** — category tastes move over time (per segment) and popularity
  shifts from older to newer items;
* **readable side data** — titles built from category-specific words (so a text
  encoder can tell categories apart), ``|``-joined categories, and user
  attributes (age, gender, country, occupation) correlated with the segment.

Everything is vectorised over users: the only Python loop runs over positions in
a history (at most ``max_interactions`` steps), each step a few numpy calls on
the users still active: 1M users x ~19 interactions took 59 s and 2.3 GB on a
busy 2-core machine; the default 2,000 users take under a second.

**Scale shapes** (:data:`SHAPES`, ``segrec synth --shape NAME``) are generator
settings that mimic the size and sparsity of real logs, so the cost of a default
run can be measured anywhere:

* ``ecommerce`` — a sparse shopping log the size of Amazon-Beauty 5-core: 22,000
  users x 12,000 items, about 200k interactions, a median of 6 per user (a floor
  of 5, long Lomax tail), 10 segments over all 20 categories, weak sequential
  signal (co-purchases).
* ``microvideo`` — a short-video feed the size of MicroLens-50k: 50,000 users x
  19,000 items, about 360k interactions (median 6), 12 segments, stronger drift
  (trends), binge-like transitions, a 180-day span.

Both use a flat Zipf exponent (0.6) so that, as in those 5-core logs, nearly the
whole catalogue is consumed (about 99.5% of the items; the most popular has
~1-2k interactions). Each takes about a second to generate.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..types import Interactions, Vocabulary

__all__ = ["GENRES", "SHAPES", "SHAPE_NOTES", "SyntheticData", "generate_synthetic"]

logger = logging.getLogger(__name__)

#: Category name -> (adjectives, nouns) from which that category's titles are built.
GENRES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Sci-Fi": (("Quantum", "Stellar", "Orbital", "Cyber", "Galactic", "Robotic", "Neon", "Astral",
                "Binary", "Cosmic", "Plasma", "Warp"),
               ("Galaxy", "Android", "Nebula", "Starship", "Reactor", "Colony", "Circuit", "Comet",
                "Portal", "Signal", "Asteroid", "Singularity")),
    "Romance": (("Tender", "Sweet", "Secret", "Endless", "Moonlit", "Gentle", "Burning", "Lovely",
                 "Stolen", "Devoted", "Blushing", "Eternal"),
                ("Kiss", "Heart", "Wedding", "Promise", "Valentine", "Rose", "Embrace", "Sweetheart",
                 "Honeymoon", "Letter", "Romance", "Darling")),
    "Horror": (("Haunted", "Bloody", "Cursed", "Wicked", "Rotten", "Shrieking", "Undead", "Ghastly",
                "Sinister", "Grim", "Creeping", "Hollow"),
               ("Crypt", "Zombie", "Ghoul", "Coffin", "Poltergeist", "Skull", "Vampire", "Asylum",
                "Graveyard", "Demon", "Nightmare", "Corpse")),
    "Comedy": (("Silly", "Goofy", "Wacky", "Clumsy", "Cheeky", "Zany", "Awkward", "Hilarious",
                "Bumbling", "Quirky", "Nutty", "Giggling"),
               ("Prank", "Clown", "Joke", "Blunder", "Sitcom", "Banana", "Roommate", "Mixup",
                "Vacation", "Hiccup", "Party", "Slapstick")),
    "Documentary": (("True", "Hidden", "Untold", "Real", "Inside", "Forgotten", "Natural", "Modern",
                     "Global", "Urban", "Ancient", "Living"),
                    ("Story", "Planet", "Ocean", "Economy", "Investigation", "Archive", "Climate",
                     "Evidence", "Expedition", "Report", "Census", "Chronicle")),
    "Fantasy": (("Enchanted", "Mystic", "Elven", "Magic", "Dragonborn", "Arcane", "Fabled", "Runic",
                 "Sorcerous", "Fairy", "Crystal", "Golden"),
                ("Dragon", "Wizard", "Kingdom", "Sword", "Unicorn", "Spell", "Castle", "Quest",
                 "Goblin", "Amulet", "Prophecy", "Throne")),
    "Thriller": (("Deadly", "Silent", "Final", "Fatal", "Rogue", "Covert", "Desperate", "Frozen",
                  "Lethal", "Shadow", "Ruthless", "Twisted"),
                 ("Conspiracy", "Hostage", "Agent", "Escape", "Pursuit", "Target", "Deadline", "Witness",
                  "Ransom", "Cipher", "Betrayal", "Trap")),
    "Western": (("Dusty", "Lonesome", "Wild", "Outlaw", "Rusty", "Sunburnt", "Rawhide", "Frontier",
                 "Golden", "Rugged", "Mustang", "Prairie"),
                ("Saloon", "Sheriff", "Cowboy", "Canyon", "Ranch", "Stagecoach", "Revolver", "Bandit",
                 "Mesa", "Rodeo", "Gulch", "Trail")),
    "Animation": (("Tiny", "Bouncy", "Fluffy", "Colorful", "Jolly", "Curious", "Brave", "Sparkly",
                   "Little", "Happy", "Magical", "Cuddly"),
                  ("Bunny", "Puppy", "Kitten", "Toybox", "Balloon", "Robot", "Penguin", "Dinosaur",
                   "Teddy", "Rainbow", "Cupcake", "Panda")),
    "Music": (("Electric", "Acoustic", "Soulful", "Rhythmic", "Melodic", "Funky", "Jazzy", "Harmonic",
               "Loud", "Groovy", "Lyrical", "Symphonic"),
              ("Guitar", "Concert", "Melody", "Band", "Drummer", "Chorus", "Ballad", "Orchestra",
               "Album", "Festival", "Anthem", "Encore")),
    "Sports": (("Fast", "Champion", "Winning", "Olympic", "Fearless", "Unbeaten", "Rival", "Varsity",
                "Underdog", "Record", "Sprinting", "Clutch"),
               ("Goal", "Stadium", "Marathon", "Coach", "Playoff", "Tournament", "Striker", "Medal",
                "Rookie", "Touchdown", "League", "Knockout")),
    "Cooking": (("Spicy", "Crispy", "Savory", "Homemade", "Roasted", "Buttery", "Smoky", "Zesty",
                 "Hearty", "Baked", "Tangy", "Delicious"),
                ("Kitchen", "Recipe", "Pastry", "Barbecue", "Noodle", "Soup", "Bakery", "Chef",
                 "Dumpling", "Feast", "Curry", "Brunch")),
    "Travel": (("Faraway", "Exotic", "Coastal", "Tropical", "Nomadic", "Scenic", "Remote", "Alpine",
                "Sunny", "Island", "Desert", "Northern"),
               ("Journey", "Passport", "Voyage", "Backpack", "Road", "Harbor", "Safari", "Beach",
                "Village", "Itinerary", "Railway", "Lagoon")),
    "History": (("Imperial", "Medieval", "Victorian", "Roman", "Royal", "Feudal", "Colonial",
                 "Byzantine", "Dynastic", "Renaissance", "Bronze", "Classical"),
                ("Empire", "Dynasty", "Revolution", "Pharaoh", "Treaty", "Crusade", "Emperor",
                 "Monarch", "Conquest", "Parliament", "Cathedral", "Chronicle")),
    "Crime": (("Dirty", "Corrupt", "Crooked", "Underworld", "Gangland", "Stolen", "Smuggled",
               "Criminal", "Notorious", "Violent", "Mobbed", "Illicit"),
              ("Heist", "Detective", "Mafia", "Robbery", "Cartel", "Precinct", "Gangster", "Alibi",
               "Mugshot", "Racket", "Informant", "Verdict")),
    "War": (("Brave", "Fallen", "Iron", "Armored", "Tactical", "Bloodied", "Frontline", "Wartime",
             "Valiant", "Embattled", "Naval", "Airborne"),
            ("Battalion", "Trench", "Soldier", "Battlefield", "Regiment", "Bunker", "Siege", "Platoon",
             "Sniper", "Armistice", "Frontier", "Infantry")),
    "Mystery": (("Curious", "Missing", "Puzzling", "Strange", "Locked", "Vanishing", "Secret",
                 "Cryptic", "Enigmatic", "Foggy", "Whispering", "Silent"),
                ("Clue", "Riddle", "Manor", "Disappearance", "Puzzle", "Key", "Inspector", "Suspect",
                 "Labyrinth", "Locket", "Diary", "Footprint")),
    "Adventure": (("Daring", "Lost", "Bold", "Uncharted", "Roaring", "Jungle", "Mighty", "Reckless",
                   "Savage", "Hidden", "Perilous", "Epic"),
                  ("Treasure", "Island", "Explorer", "Voyage", "Map", "Temple", "Pirate", "Raft",
                   "Volcano", "Jungle", "Compass", "Summit")),
    "Drama": (("Broken", "Quiet", "Bitter", "Fragile", "Longing", "Restless", "Distant", "Grieving",
               "Honest", "Lonely", "Ordinary", "Unspoken"),
              ("Family", "Memory", "Silence", "Farewell", "Tears", "Confession", "Inheritance",
               "Reunion", "Choice", "Winter", "Homecoming", "Sacrifice")),
    "Science": (("Molecular", "Atomic", "Genetic", "Chemical", "Neural", "Quantified", "Cellular",
                 "Magnetic", "Thermal", "Theoretical", "Empirical", "Kinetic"),
                ("Laboratory", "Experiment", "Molecule", "Theory", "Particle", "Genome", "Neuron",
                 "Microscope", "Equation", "Telescope", "Enzyme", "Catalyst")),
}

_COUNTRIES = ("US", "UK", "DE", "FR", "BR", "IN", "JP", "NG", "MX", "AU")
_OCCUPATIONS = ("student", "engineer", "artist", "teacher", "doctor", "writer", "lawyer", "retired",
                "salesperson", "scientist", "homemaker", "technician")
_EPOCH_2020 = 1577836800  # 2020-01-01T00:00:00Z
_DAY = 86400
_TIME_BUCKETS = 8  # taste drift is piecewise constant over this many slices of the time span
_N_SUCCESSORS = 5
_SUCCESSOR_P = np.array([0.35, 0.25, 0.2, 0.12, 0.08])

#: Named scale shapes: keyword arguments of :func:`generate_synthetic` that mimic the
#: size and sparsity of real logs (see the module docstring). ``mean_interactions`` is
#: set a little above the wanted mean because the Lomax draw is floored to whole items.
SHAPES: dict[str, dict[str, Any]] = {
    "ecommerce": dict(
        n_users=22_000, n_items=12_000, n_segments=10, n_categories=20,
        mean_interactions=9.7, min_interactions=5, activity_shape=2.0,
        popularity_exponent=0.6, sequential_strength=0.3, drift_strength=1.0,
    ),
    "microvideo": dict(
        n_users=50_000, n_items=19_000, n_segments=12, n_categories=20,
        mean_interactions=7.7, min_interactions=5, activity_shape=2.5,
        popularity_exponent=0.6, sequential_strength=0.6, drift_strength=1.5, span_days=180,
    ),
}
#: One line per shape for help texts.
SHAPE_NOTES: dict[str, str] = {
    "ecommerce": "sparse shopping log, 22k users x 12k items, ~200k interactions, median 6 per user",
    "microvideo": "short-video feed, 50k users x 19k items, ~360k interactions, trends and binges",
}


@dataclass(frozen=True, eq=False)
class SyntheticData:
    """Frames of one synthetic dataset, shaped like real input files.

    Attributes:
        interactions: ``user_id, item_id, rating, timestamp`` (string ids, int
            ratings 1-5, epoch seconds), one row per (user, item) pair, in time order.
        items: ``item_id, title, categories, release_year``.
        users: ``user_id, age, gender, country, occupation``.
        true_segments: ``user_id, segment`` (the planted segment, 0..n_segments-1).
        params: The generator's arguments, for reports.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    true_segments: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)

    def to_interactions(self) -> Interactions:
        """Run the frames through :func:`~segrec.data.load_interactions` (with both tables).

        Only items someone consumed enter the vocabulary (as for any file); the
        catalogue's few never-drawn long-tail items are dropped without the warning
        a user's own table would get, since here that is by construction.
        """
        from .load import load_interactions

        used = self.items[self.items["item_id"].isin(self.interactions["item_id"])]
        return load_interactions(self.interactions, items=used, users=self.users)

    def segment_labels(self, user_vocab: Vocabulary) -> np.ndarray:
        """Planted segment per dense user of ``user_vocab``; -1 for unknown users.

        Returns:
            int64 array of shape (len(user_vocab),).
        """
        pos = user_vocab.index(self.true_segments["user_id"].to_numpy(dtype=object))
        labels = np.full(len(user_vocab), -1, dtype=np.int64)
        known = pos >= 0
        labels[pos[known]] = self.true_segments["segment"].to_numpy()[known]
        return labels

    def save_csv(self, directory: str | os.PathLike) -> dict[str, Path]:
        """Write ``interactions.csv``, ``items.csv``, ``users.csv``, ``true_segments.csv``.

        Each file is written to a temporary name and renamed into place, so a
        crash never leaves a truncated CSV behind.

        Args:
            directory: Output folder (created if needed).

        Returns:
            File stem -> written path.
        """
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        written = {}
        frames = {"interactions": self.interactions, "items": self.items, "users": self.users,
                  "true_segments": self.true_segments}
        for stem, frame in frames.items():
            path = out / f"{stem}.csv"
            tmp = out / f".{stem}.csv.tmp-{uuid.uuid4().hex[:8]}"
            try:
                # pyarrow writes 20M rows in seconds where DataFrame.to_csv takes a minute
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if _needs_quotes(table):
                    pa_csv.write_csv(table, tmp)
                else:  # plain CSV, header included (pyarrow would quote the header and every string)
                    with open(tmp, "wb") as fh:
                        fh.write((",".join(table.column_names) + "\n").encode())
                        options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
                        pa_csv.write_csv(table, fh, write_options=options)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            written[stem] = path
        return written


def _needs_quotes(table) -> bool:
    """Whether any text cell holds a comma, quote or newline (else plain, unquoted CSV is exact)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return any(
        pc.any(pc.match_substring_regex(col, r'[,"\r\n]')).as_py()
        for col in table.columns
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
    )


def _check(name: str, value, ok: bool, rule: str) -> None:
    if not ok:
        raise ConfigError(
            f"The '{name}' parameter of generate_synthetic must be {rule}. Got {value!r} instead."
        )


def _checked_sizes(n_users, n_items, n_segments, min_interactions, max_interactions, n_categories,
                   mean_interactions, activity_shape, shares: dict[str, float]) -> tuple[int, int]:
    """Validate :func:`generate_synthetic`'s arguments; returns (categories, history cap) resolved.

    Raises:
        ConfigError: For an out-of-range argument (one line naming it).
    """
    n_cat = n_categories if n_categories is not None else int(np.clip(3 * n_segments, 8, len(GENRES)))
    _check("n_users", n_users, isinstance(n_users, int | np.integer) and n_users >= 1, "an int >= 1")
    _check("n_segments", n_segments, isinstance(n_segments, int | np.integer) and 1 <= n_segments <= n_users,
           "an int in [1, n_users]")
    _check("min_interactions", min_interactions, min_interactions >= 1, "an int >= 1")
    _check("n_items", n_items,
           isinstance(n_items, int | np.integer) and n_items >= max(2, 2 * min_interactions),
           f"an int >= 2 * min_interactions = {2 * min_interactions}")
    _check("n_categories", n_categories, 1 <= n_cat <= min(len(GENRES), n_items),
           f"an int in [1, min({len(GENRES)}, n_items)]")
    _check("mean_interactions", mean_interactions, mean_interactions > min_interactions,
           f"a number > min_interactions = {min_interactions}")
    _check("activity_shape", activity_shape, activity_shape > 1.0, "a number > 1")
    for name, value in shares.items():
        _check(name, value, 0.0 <= value <= 1.0, "a number in [0, 1]")
    cap = max_interactions or int(min(n_items // 2, 20 * mean_interactions))
    _check("max_interactions", max_interactions, min_interactions <= cap <= n_items,
           "an int in [min_interactions, n_items]")
    return n_cat, cap


def generate_synthetic(
    n_users: int = 2000,
    n_items: int = 1000,
    n_segments: int = 4,
    seed: int = 0,
    *,
    mean_interactions: float = 40.0,
    min_interactions: int = 5,
    max_interactions: int | None = None,
    n_categories: int | None = None,
    popularity_exponent: float = 0.9,
    activity_shape: float = 2.0,
    taste_strength: float = 3.0,
    personal_taste: float = 0.15,
    sequential_strength: float = 0.5,
    drift_strength: float = 1.0,
    attribute_signal: float = 0.7,
    span_days: int = 730,
) -> SyntheticData:
    """Generate a reproducible dataset with planted user segments.

    Use it as default data for the main job, in tests (small sizes) and in
    benchmarks (up to millions of users). The same arguments always give
    identical frames.

    Args:
        n_users: Number of users.
        n_items: Number of items (the catalogue).
        n_segments: Number of planted segments (tastes and sequential patterns).
        seed: Random seed.
        mean_interactions: Target mean interactions per user before the cap.
        min_interactions: Every user gets at least this many distinct items.
        max_interactions: Cap on one user's history; default ``min(n_items // 2, 20 * mean)``.
        n_categories: Item categories; default ``clip(3 * n_segments, 8, 20)``.
        popularity_exponent: Zipf exponent of item popularity (within a category).
        activity_shape: Lomax shape of user activity; smaller is heavier-tailed (> 1).
        taste_strength: Logit boost of a segment's favourite categories.
        personal_taste: Share of picks from the user's own favourite category.
        sequential_strength: Probability that the next item follows the segment's
            Markov transition from the previous item (else a fresh taste pick).
        drift_strength: Scale of taste and popularity drift over the time span.
        attribute_signal: Probability that a user attribute is drawn from the
            segment's distribution rather than the population's.
        span_days: Length of the time span, starting 2020-01-01 UTC.

    Returns:
        A :class:`SyntheticData`.

    Raises:
        ConfigError: For out-of-range arguments.

    Example:
        >>> data = generate_synthetic(n_users=50, n_items=40, n_segments=2, seed=1)
        >>> data.true_segments["segment"].nunique(), bool(
        ...     data.interactions.groupby("user_id").size().min() >= 5)
        (2, True)
    """
    n_cat, cap = _checked_sizes(n_users, n_items, n_segments, min_interactions, max_interactions,
                                n_categories, mean_interactions, activity_shape,
                                {"sequential_strength": sequential_strength, "personal_taste": personal_taste,
                                 "attribute_signal": attribute_signal})
    params = dict(n_users=n_users, n_items=n_items, n_segments=n_segments, seed=seed,
                  mean_interactions=mean_interactions, min_interactions=min_interactions,
                  max_interactions=cap, n_categories=n_cat, popularity_exponent=popularity_exponent,
                  activity_shape=activity_shape, taste_strength=taste_strength, personal_taste=personal_taste,
                  sequential_strength=sequential_strength, drift_strength=drift_strength,
                  attribute_signal=attribute_signal, span_days=span_days)

    rng = np.random.default_rng(seed)
    world = _World.build(rng, n_users, n_items, n_segments, n_cat, params)
    users, items, times = _histories(rng, world, params)
    ratings = _ratings(rng, world, users, items)

    data = _assemble(rng, world, users, items, times, ratings, params)
    logger.info("synthetic data: %d users, %d items, %d interactions, %d segments",
                n_users, n_items, len(data.interactions), n_segments)
    return data


def _assemble(rng, world, users, items, times, ratings, params) -> SyntheticData:
    """The frames of one generated dataset (the item and user tables draw from ``rng`` after the log)."""
    n_users, n_items = params["n_users"], params["n_items"]
    # A log in time order, like real exports; ties (different users) by user.
    order = _sorted_positions(times * n_users + users)
    user_ids = _format_ids("u", n_users)
    item_ids = _format_ids("i", n_items)
    interactions = pd.DataFrame({
        "user_id": _take_strings(user_ids, users[order]),
        "item_id": _take_strings(item_ids, items[order]),
        "rating": ratings[order],
        "timestamp": times[order] + _EPOCH_2020,
    })
    items_frame = _item_frame(rng, world, item_ids)
    users_frame = _user_frame(rng, world, user_ids, params["attribute_signal"])
    segments = pd.DataFrame({"user_id": pd.array(user_ids, dtype="str"), "segment": world.segment})
    return SyntheticData(interactions, items_frame, users_frame, segments, params)


# ---------------------------------------------------------------- the world
def _format_ids(prefix: str, n: int) -> np.ndarray:
    """Zero-padded string ids (``u0007``), so id handling is exercised as strings."""
    width = len(str(max(n - 1, 0)))
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), width)).astype(object)


def _take_strings(ids: np.ndarray, index: np.ndarray) -> pd.Series:
    """``ids[index]`` as a pandas string column, gathered by pyarrow (fast for 10M+ rows)."""
    import pyarrow as pa

    return pa.array(ids, type=pa.string()).take(pa.array(index)).to_pandas()


def _cdf(probs: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(probs, axis=-1)
    cdf /= cdf[..., -1:]
    cdf[..., -1] = 1.0  # exact, so the offset trick in _draw never spills into the next group
    return cdf


def _draw(rng: np.random.Generator, flat_cdf: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Sample one index per row from the distribution of its ``group``.

    ``flat_cdf`` holds every group's cumulative probabilities shifted by the
    group number (``g + cdf_g``), so a single ``searchsorted`` on ``g + u``
    samples all rows at once: O(n log size) instead of an (n, size) matrix.

    Returns:
        Positions into ``flat_cdf`` (subtract the group's start to get a local index).
    """
    u = rng.random(len(group))
    return np.searchsorted(flat_cdf, group + u, side="right")


@dataclass
class _World:
    """The hidden parameters: categories, popularity, tastes, transitions."""

    n_items: int
    n_categories: int
    segment: np.ndarray  # (n_users,) planted segment
    personal: np.ndarray  # (n_users,) personal favourite category
    item_category: np.ndarray  # (n_items,) primary category
    item_secondary: np.ndarray  # (n_items,) secondary category or -1
    item_release: np.ndarray  # (n_items,) release time as a fraction of the span
    favourites: np.ndarray  # (n_segments, n_categories) bool
    taste_logits: np.ndarray  # (n_segments, n_categories)
    cat_flat: np.ndarray  # (n_segments * buckets * C,) shifted CDFs of category choice
    item_flat: np.ndarray  # (2 * n_items,) shifted CDFs of item-within-category (old, new regime)
    item_by_cat: np.ndarray  # (n_items,) item ids sorted by category
    cat_start: np.ndarray  # (C + 1,) start of each category in item_by_cat
    successors: np.ndarray  # (n_segments, n_items, S) next-item table per segment

    @classmethod
    def build(cls, rng, n_users, n_items, n_segments, n_cat, params) -> _World:
        # Segments of unequal size (some small, as in real data), none vanishing.
        shares = 0.5 * rng.dirichlet(np.full(n_segments, 2.0)) + 0.5 / n_segments
        segment = rng.choice(n_segments, size=n_users, p=shares)
        segment[:n_segments] = np.arange(n_segments)  # every segment is non-empty
        rng.shuffle(segment)

        # Items: every category non-empty, the rest spread unevenly.
        cat_shares = rng.dirichlet(np.full(n_cat, 5.0))
        item_category = np.concatenate([np.arange(n_cat), rng.choice(n_cat, n_items - n_cat, p=cat_shares)])
        rng.shuffle(item_category)
        has_second = rng.random(n_items) < 0.35
        second = (item_category + rng.integers(1, max(n_cat, 2), n_items)) % n_cat
        item_secondary = np.where(has_second & (n_cat > 1), second, -1)
        item_release = rng.random(n_items)

        # Tastes: two favourite categories per segment (distinct across segments
        # while categories last), a weaker third one, and noise.
        perm = rng.permutation(n_cat)
        favourites = np.zeros((n_segments, n_cat), dtype=bool)
        taste = rng.normal(0.0, 0.5, (n_segments, n_cat))
        for k in range(n_segments):  # loops over segments only
            fav = perm[[(2 * k) % n_cat, (2 * k + 1) % n_cat]]
            favourites[k, fav] = True
            taste[k, fav] += params["taste_strength"]
            taste[k, rng.integers(n_cat)] += params["taste_strength"] / 2
        drift = rng.normal(0.0, params["drift_strength"], (n_segments, n_cat))
        mids = (np.arange(_TIME_BUCKETS) + 0.5) / _TIME_BUCKETS - 0.5  # (B,) centred bucket times
        logits = taste[:, None, :] + drift[:, None, :] * mids[None, :, None]  # (K, B, C)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        cat_cdf = _cdf(probs.reshape(-1, n_cat))
        cat_flat = (np.arange(len(cat_cdf))[:, None] + cat_cdf).ravel()

        # Popularity: Zipf over a random rank, tilted towards old or new items.
        rank = rng.permutation(n_items) + 1.0
        pop = rank ** -params["popularity_exponent"]
        tilt = params["drift_strength"] * 2.0 * (item_release - 0.5)
        item_by_cat = np.argsort(item_category, kind="stable")
        cat_start = np.searchsorted(item_category[item_by_cat], np.arange(n_cat + 1))
        flats = []
        for sign in (-1.0, 1.0):  # old regime, new regime
            w = (pop * np.exp(sign * tilt))[item_by_cat]
            cum = np.cumsum(w)
            starts = np.r_[0.0, cum[cat_start[1:-1] - 1]]
            cat_of = item_category[item_by_cat]
            within = (cum - starts[cat_of]) / np.bincount(cat_of, weights=w, minlength=n_cat)[cat_of]
            within[cat_start[1:] - 1] = 1.0
            flats.append(cat_of + within)
        item_flat = np.concatenate([flats[0], flats[1] + n_cat])

        personal = rng.integers(0, n_cat, n_users)
        world = cls(n_items, n_cat, segment, personal, item_category, item_secondary, item_release,
                    favourites, taste, cat_flat, item_flat, item_by_cat, cat_start,
                    np.empty((0, 0, 0), np.int64))
        # Successors: per segment, each item's next items are taste picks of that
        # segment, drawn independently, so transitions differ between segments.
        seg_rows = np.repeat(np.arange(n_segments), n_items * _N_SUCCESSORS)
        mid_bucket = np.full(len(seg_rows), _TIME_BUCKETS // 2)
        succ = world.pick(rng, seg_rows, mid_bucket, np.full(len(seg_rows), 0.5))
        world.successors = succ.reshape(n_segments, n_items, _N_SUCCESSORS)
        return world

    def pick(self, rng, seg, bucket, frac, personal=None, p_personal=0.0) -> np.ndarray:
        """Fresh taste picks: category from the segment's (drifting) taste, then item by popularity."""
        group = seg * _TIME_BUCKETS + bucket
        cat = _draw(rng, self.cat_flat, group) - group * self.n_categories
        if personal is not None and p_personal > 0:
            cat = np.where(rng.random(len(cat)) < p_personal, personal, cat)
        new_regime = (rng.random(len(cat)) < frac).astype(np.int64)  # later times favour newer items
        pos = _draw(rng, self.item_flat, cat + new_regime * self.n_categories) - new_regime * self.n_items
        return self.item_by_cat[np.minimum(pos, self.n_items - 1)]


def _activity(rng, n_users: int, params: dict) -> np.ndarray:
    """Target history lengths: ``min + Lomax`` with the requested mean, capped."""
    a = params["activity_shape"]
    lo = params["min_interactions"]
    scale = (params["mean_interactions"] - lo) * (a - 1.0)
    lengths = lo + np.floor(rng.pareto(a, n_users) * scale).astype(np.int64)
    return np.minimum(lengths, params["max_interactions"])


def _simulate(rng, world: _World, params: dict, users: np.ndarray, lengths: np.ndarray,
              start: np.ndarray, gap: np.ndarray, prev: np.ndarray):
    """Walk every user's history forward, vectorised across users.

    Users are processed longest-first so the users still active at step ``t``
    are always a prefix of the arrays, and row ``offset[u] + t`` holds step ``t``.

    Returns:
        ``(users, items, times)`` in user-major, time-ordered layout.
    """
    order = np.argsort(-lengths, kind="stable")
    users, lengths, start, gap, prev = users[order], lengths[order], start[order], gap[order], prev[order]
    seg, personal = world.segment[users], world.personal[users]
    offsets = np.r_[0, np.cumsum(lengths)[:-1]]
    total = int(lengths.sum())
    out_items = np.empty(total, np.int64)
    out_times = np.empty(total, np.int64)
    now = start.astype(np.float64)
    span = params["span_days"] * _DAY
    active_counts = np.searchsorted(-lengths, -np.arange(int(lengths.max(initial=0))), side="left")
    for t, n_t in enumerate(active_counts):  # loop over positions, never over users
        n_t = int(n_t)
        now[:n_t] += rng.exponential(gap[:n_t]) + 1.0  # +1 s: strictly increasing times
        frac = np.clip(now[:n_t] / span, 0.0, 1.0)
        bucket = np.minimum((frac * _TIME_BUCKETS).astype(np.int64), _TIME_BUCKETS - 1)
        item = world.pick(rng, seg[:n_t], bucket, frac, personal[:n_t], params["personal_taste"])
        p = prev[:n_t]
        follow = (p >= 0) & (rng.random(n_t) < params["sequential_strength"])
        choice = np.searchsorted(np.cumsum(_SUCCESSOR_P), rng.random(n_t), side="right")
        succ = world.successors[seg[:n_t], np.maximum(p, 0), np.minimum(choice, _N_SUCCESSORS - 1)]
        item = np.where(follow, succ, item)
        rows = offsets[:n_t] + t
        out_items[rows] = item
        out_times[rows] = now[:n_t].astype(np.int64)
        prev[:n_t] = item
    return np.repeat(users, lengths), out_items, out_times


def _histories(rng, world: _World, params: dict):
    """Histories of distinct items, ~``target`` long, at least ``min_interactions`` each.

    Returns:
        ``(users, items, times)``, one row per distinct (user, item) pair.
    """
    n_users = len(world.segment)
    span = params["span_days"] * _DAY
    target = _activity(rng, n_users, params)
    # Users join over the span (more later: sqrt), stay active ~120 days on average.
    start = np.sqrt(rng.random(n_users)) * 0.85 * span
    active_span = np.minimum(rng.exponential(120 * _DAY, n_users) + 7 * _DAY, span - start)
    gap = active_span / target
    # Repeats of an item are dropped, so walk a margin of extra steps, then keep
    # each user's first `target` distinct items.
    extra = np.ceil(0.25 * target).astype(np.int64) + 2
    u, i, t = _simulate(rng, world, params, np.arange(n_users), target + extra, start, gap,
                        np.full(n_users, -1))
    u, i, t = _dedup(u, i, t, world.n_items)
    # _simulate's rows are grouped by user and in time order, and _dedup keeps that order.
    new_group = np.r_[True, u[1:] != u[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(u)), 0))
    keep = (np.arange(len(u)) - group_start) < target[u]
    u, i, t = u[keep], i[keep], t[keep]

    lo = params["min_interactions"]
    for attempt in range(8):
        # Top up users whose repeats left them short: first towards their target
        # (heavy users repeat the most), later only to the floor.
        have = np.bincount(u, minlength=n_users)
        goal = target if attempt < 3 else np.minimum(target, lo)
        short = np.flatnonzero(have < goal)
        if len(short) == 0:
            break
        is_short = np.zeros(n_users, bool)
        is_short[short] = True
        sel = is_short[u]
        su, si, st = u[sel], i[sel], t[sel]
        order = np.lexsort((st, su))  # small: only the short users' rows
        su, si, st = su[order], si[order], st[order]
        last = np.r_[su[1:] != su[:-1], True]
        last_i, last_t = np.full(n_users, -1), np.zeros(n_users, np.int64)
        last_i[su[last]], last_t[su[last]] = si[last], st[last]
        need = 2 * (goal[short] - have[short]) + 2
        u2, i2, t2 = _simulate(rng, world, params, short, need, last_t[short].astype(np.float64),
                               gap[short], last_i[short])
        su, si, st = _dedup(np.r_[su, u2], np.r_[si, i2], np.r_[st, t2], world.n_items)
        order = np.lexsort((st, su))
        su, si, st = su[order], si[order], st[order]
        new_group = np.r_[True, su[1:] != su[:-1]]
        group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(su)), 0))
        ok = (np.arange(len(su)) - group_start) < target[su]
        u, i, t = np.r_[u[~sel], su[ok]], np.r_[i[~sel], si[ok]], np.r_[t[~sel], st[ok]]
    return _fill_minimum(rng, world, lo, u, i, t)


def _sorted_positions(key: np.ndarray) -> np.ndarray:
    """A stable argsort of non-negative int64 ``key``.

    Packs (key, position) into one int64 when the bits allow and uses
    ``np.sort``, several times faster than a stable ``argsort`` on tens of
    millions of rows.
    """
    n = len(key)
    if n == 0:
        return np.empty(0, np.int64)
    pos_bits = max(int(n - 1).bit_length(), 1)
    if int(key.max()).bit_length() + pos_bits <= 62:
        packed = np.sort((key.astype(np.int64) << pos_bits) | np.arange(n, dtype=np.int64))
        return packed & ((1 << pos_bits) - 1)
    return np.argsort(key, kind="stable")


def _dedup(u, i, t, n_items):
    """Drop repeated (user, item) pairs, keeping the first occurrence in array order."""
    key = u.astype(np.int64) * n_items + i
    order = _sorted_positions(key)
    k = key[order]
    first = np.sort(order[np.r_[True, k[1:] != k[:-1]]])
    return u[first], i[first], t[first]


def _fill_minimum(rng, world, lo: int, u, i, t):
    """Guarantee ``lo`` distinct items per user; only tiny catalogues ever need it."""
    n_users = len(world.segment)
    have = np.bincount(u, minlength=n_users)
    short = np.flatnonzero(have < lo)
    if len(short) == 0:
        return u, i, t
    logger.debug("filling %d users up to %d interactions", len(short), lo)
    add_u, add_i, add_t = [], [], []
    for user in short:  # a handful of users at most, so a loop is fine
        mine = u == user
        seen = set(i[mine].tolist())
        fresh = [x for x in rng.permutation(world.n_items).tolist() if x not in seen][: lo - have[user]]
        last = int(t[mine].max(initial=0))
        add_u += [user] * len(fresh)
        add_i += fresh
        add_t += [last + 3600 * (j + 1) for j in range(len(fresh))]
    return (np.r_[u, np.asarray(add_u, np.int64)], np.r_[i, np.asarray(add_i, np.int64)],
            np.r_[t, np.asarray(add_t, np.int64)])


def _ratings(rng, world: _World, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """1-5 stars: higher for items of categories the user's segment (or the user) favours."""
    seg = world.segment[users]
    cat = world.item_category[items]
    logits = world.taste_logits
    z = (logits[seg, cat] - logits.mean(1)[seg]) / (logits.std(1)[seg] + 1e-9)
    score = 3.2 + 0.8 * z + 0.7 * (cat == world.personal[users]) + rng.normal(0.0, 0.8, len(users))
    return np.clip(np.rint(score), 1, 5).astype(np.int64)


def _item_frame(rng, world: _World, item_ids: np.ndarray) -> pd.DataFrame:
    """Items with titles from their categories' words, ``|``-joined categories, a release year."""
    names = np.array(list(GENRES)[: world.n_categories], dtype=object)
    n = world.n_items
    cat, second = world.item_category, world.item_secondary
    adjectives = np.array([GENRES[g][0] for g in names], dtype=object)  # (C, 12)
    nouns = np.array([GENRES[g][1] for g in names], dtype=object)
    adj = adjectives[cat, rng.integers(0, 12, n)]
    noun = nouns[cat, rng.integers(0, 12, n)]
    tail_cat = np.where(second >= 0, second, cat)
    tail = nouns[tail_cat, rng.integers(0, 12, n)]
    with_tail = (second >= 0) | (rng.random(n) < 0.3)
    titles = pd.Series(adj + " " + noun, dtype="object")
    titles = titles.where(~with_tail, titles + " of the " + tail)
    repeat = titles.groupby(titles).cumcount().to_numpy()
    titles = titles.where(repeat == 0, titles + " " + (repeat + 1).astype(str))  # "Neon Comet 2"
    categories = pd.Series(names[cat], dtype="object")
    categories = categories.where(second < 0, categories + "|" + names[np.maximum(second, 0)])
    return pd.DataFrame({
        "item_id": pd.array(item_ids, dtype="str"),
        "title": pd.array(titles.to_numpy(), dtype="str"),
        "categories": pd.array(categories.to_numpy(), dtype="str"),
        "release_year": (2014 + np.floor(world.item_release * 9)).astype(np.int64),
    })


def _user_frame(rng, world: _World, user_ids: np.ndarray, signal: float) -> pd.DataFrame:
    """Age, gender, country, occupation; each drawn from the segment's distribution with prob ``signal``."""
    seg = world.segment
    n, k = len(seg), world.taste_logits.shape[0]
    from_seg = rng.random((n, 4)) < signal
    age_mean = rng.uniform(20, 58, k)
    age = np.where(from_seg[:, 0], rng.normal(age_mean[seg], 5.0), rng.normal(36, 13, n))
    female = rng.uniform(0.15, 0.85, k)
    gender = np.where(rng.random(n) < np.where(from_seg[:, 1], female[seg], 0.5), "F", "M")

    def categorical(values, column):
        seg_cdf = _cdf(rng.dirichlet(np.full(len(values), 0.4), k))  # (K, V), peaked
        flat = (np.arange(k)[:, None] + seg_cdf).ravel()
        by_seg = _draw(rng, flat, seg) - seg * len(values)
        overall = rng.integers(0, len(values), n)
        picked = np.where(from_seg[:, column], np.minimum(by_seg, len(values) - 1), overall)
        return np.asarray(values, dtype=object)[picked]

    return pd.DataFrame({
        "user_id": pd.array(user_ids, dtype="str"),
        "age": np.clip(np.rint(age), 13, 80).astype(np.int64),
        "gender": pd.array(gender, dtype="str"),
        "country": pd.array(categorical(_COUNTRIES, 2), dtype="str"),
        "occupation": pd.array(categorical(_OCCUPATIONS, 3), dtype="str"),
    })
