"""Synthetic interactions with planted latent factors and item text that reveals them."""

from __future__ import annotations

import numpy as np

from lightning_bridge.data.sources import RawData

GENRES = ("action", "comedy", "drama", "horror", "romance", "scifi", "thriller", "western", "musical",
          "documentary", "fantasy", "mystery")


def synthetic_raw(num_users: int = 200, num_items: int = 100, num_factors: int = 4, min_interactions: int = 5,
                  max_interactions: int = 20, seed: int = 0) -> RawData:
    """Users pick items with probability proportional to ``exp(3 * cosine(user, item))`` over planted
    non-negative factors; each item's text names its two strongest factors as genres, so text carries
    real signal about behaviour."""
    if not 1 <= num_factors <= len(GENRES):
        raise ValueError(f"num_factors must be in 1..{len(GENRES)}, got {num_factors}")
    if not 3 <= min_interactions <= max_interactions < num_items:
        raise ValueError("need 3 <= min_interactions <= max_interactions < num_items, got "
                         f"{min_interactions}, {max_interactions}, {num_items}")
    rng = np.random.default_rng(seed)
    user_f = rng.gamma(0.5, size=(num_users, num_factors))
    item_f = rng.gamma(0.5, size=(num_items, num_factors))
    user_f /= np.linalg.norm(user_f, axis=1, keepdims=True) + 1e-9
    item_f /= np.linalg.norm(item_f, axis=1, keepdims=True) + 1e-9
    logits = 3.0 * user_f @ item_f.T
    # Gumbel top-k: sampling without replacement in proportion to exp(logits), vectorised over users.
    keys = logits + rng.gumbel(size=logits.shape)
    ranked = np.argsort(-keys, axis=1)
    counts = rng.integers(min_interactions, max_interactions + 1, size=num_users)
    users = np.repeat(np.arange(num_users), counts)
    items = np.concatenate([ranked[u, :c] for u, c in enumerate(counts)])
    timestamps = rng.permutation(len(users)).astype(np.int64)
    top = np.argsort(-item_f, axis=1)[:, :2]
    item_text = {str(i): f"item {i}; genres: " + ", ".join(GENRES[f] for f in top[i]) for i in range(num_items)}
    return RawData(users=users.astype(str), items=items.astype(str),
                   ratings=np.ones(len(users), dtype=np.float32), timestamps=timestamps,
                   item_text=item_text, item_titles={str(i): f"item {i}" for i in range(num_items)},
                   user_text={}, source=f"synthetic(seed={seed})")


# Topics named by words a pretrained language model already relates: the title words of a topic's items say
# which topic (and so which users) an item belongs to, even for an item nobody has interacted with yet.
TOPIC_WORDS = {
    "space": ("galaxy", "rocket", "orbit", "planet", "astronaut", "comet", "nebula", "moon", "star", "alien"),
    "cooking": ("kitchen", "recipe", "bread", "soup", "chef", "spice", "baking", "pasta", "dinner", "flavor"),
    "war": ("battle", "soldier", "army", "siege", "tank", "general", "trench", "invasion", "fleet", "rifle"),
    "romance": ("love", "kiss", "wedding", "heart", "bride", "romance", "lovers", "valentine", "darling", "sweetheart"),
    "horror": ("ghost", "haunted", "zombie", "vampire", "curse", "nightmare", "blood", "demon", "crypt", "scream"),
    "sports": ("football", "champion", "stadium", "goal", "marathon", "boxing", "tennis", "coach", "league", "racer"),
    "ocean": ("sea", "whale", "sailor", "island", "coral", "shark", "harbor", "tide", "reef", "voyage"),
    "music": ("guitar", "song", "piano", "concert", "melody", "jazz", "band", "symphony", "singer", "drummer"),
    "crime": ("detective", "murder", "heist", "gangster", "police", "robbery", "mafia", "thief", "prison", "crime"),
    "animals": ("puppy", "kitten", "horse", "tiger", "elephant", "zoo", "bear", "wolf", "rabbit", "parrot"),
}
TITLE_PATTERNS = ("The {a} of the {b}", "{a} and {b}", "The Last {a}", "{a} {b}", "Return of the {a}",
                  "A {a} in the {b}")


def synthetic_topics_raw(num_users: int = 1500, num_items: int = 3000, num_topics: int = 10,
                         mean_interactions: float = 8.0, popularity_exponent: float = 1.0,
                         noise: float = 0.1, favourite_words: int = 2, seed: int = 0) -> RawData:
    """Users with one or two favourite topics pick items of those topics, popular ones more often
    (``popularity_exponent``: Zipf weights), and a ``noise`` share of items at random. Item titles are made of
    two of their topic's words, so text tells what sparse interactions cannot: most items have at most three
    interactions, most users a handful, and a new item's topic is in its title alone.

    With ``favourite_words`` > 0 a user also has that many favourite words in each favourite topic and picks
    only items whose title has one of them. The graph then learns the topic from a handful of interactions,
    but which of a topic's hundreds of rare items share a user's words only their titles say; with 0 the taste
    is the topic alone, which a few interactions already reveal, and text can add little."""
    if not 1 <= num_topics <= len(TOPIC_WORDS):
        raise ValueError(f"num_topics must be in 1..{len(TOPIC_WORDS)}, got {num_topics}")
    if mean_interactions < 3 or not 0 <= noise < 1:
        raise ValueError(f"need mean_interactions >= 3 and 0 <= noise < 1, got {mean_interactions}, {noise}")
    words_per_topic = len(next(iter(TOPIC_WORDS.values())))
    if not 0 <= favourite_words < words_per_topic:
        raise ValueError(f"favourite_words must be in 0..{words_per_topic - 1}, got {favourite_words}")
    rng = np.random.default_rng(seed)
    topics = list(TOPIC_WORDS)[:num_topics]
    item_topic = rng.integers(num_topics, size=num_items)
    # each title: two distinct words of its topic, in one of the patterns
    item_words = np.argsort(rng.random((num_items, words_per_topic)), axis=1)[:, :2]
    patterns = rng.integers(len(TITLE_PATTERNS), size=num_items)
    # a title of one word ("The Last {a}") shows only its first word: the second must not steer anyone's taste
    shows_word = np.stack([np.ones(num_items, dtype=bool),
                           np.array(["{b}" in p for p in TITLE_PATTERNS])[patterns]], axis=1)
    weight = rng.permutation(num_items) + 1.0
    weight = weight ** -popularity_exponent  # Zipf popularity, in a random order over items
    favourites = [rng.choice(num_topics, size=rng.integers(1, 3), replace=False) for _ in range(num_users)]
    counts = np.minimum(3 + rng.geometric(1 / (mean_interactions - 2), size=num_users) - 1, num_items // 4)
    users, items = [], []
    for u, (likes, n) in enumerate(zip(favourites, counts, strict=True)):
        liked = np.isin(item_topic, likes)
        if favourite_words:
            words = np.zeros((num_topics, words_per_topic), dtype=bool)
            for t in likes:
                words[t, rng.choice(words_per_topic, size=favourite_words, replace=False)] = True
            liked &= (words[item_topic[:, None], item_words] & shows_word).any(1)
        pool = np.flatnonzero(liked)
        from_taste = min(n - rng.binomial(n, noise), len(pool))
        chosen = rng.choice(pool, size=from_taste, replace=False, p=weight[pool] / weight[pool].sum())
        rest = np.setdiff1d(np.arange(num_items), chosen)
        chosen = np.concatenate([chosen, rng.choice(rest, size=n - from_taste, replace=False)])
        users.append(np.full(n, u))
        items.append(rng.permutation(chosen))
    users, items = np.concatenate(users), np.concatenate(items)
    item_text = {}
    for i in range(num_items):
        words = TOPIC_WORDS[topics[item_topic[i]]]
        a, b = item_words[i]
        item_text[str(i)] = TITLE_PATTERNS[patterns[i]].format(a=words[a].title(), b=words[b].title())
    return RawData(users=users.astype(str), items=items.astype(str),
                   ratings=np.ones(len(users), dtype=np.float32),
                   timestamps=np.arange(len(users), dtype=np.int64), item_text=item_text,
                   item_titles=dict(item_text), user_text={},
                   source=f"synthetic_topics(seed={seed})")
