"""The tiny non-verifiable task: short synthetic instructions judged by a hidden quality function.

Four instruction families over small closed vocabularies, so that a 2.6M-parameter
character-level policy and reward model can learn them within the build budget: list N things
of a category ("List 3 fruits."), a yes/no membership question ("Is a plum a fruit?"), count
from a to b, and greet someone by name. (Reversing, capitalising and repeating arbitrary strings
were tried first: neither tiny model learned them in budget.) Each record keeps its family,
parameters and a reference answer as hidden fields; the trainer reads only ``id`` and ``prompt``.

`quality(record, response)` (0..1, correctness and format) exists ONLY to make synthetic
preference pairs for the tiny reward model. The pairs are ranked by the utility
``quality + length_bias * len(response)``: a deliberate, mild length bias, like the one real
reward models have. Polite filler ("Sure! ...", "... I hope this helps!") and elaborated answers
("Yes, a plum is a fruit.") leave quality unchanged, so among equal answers the longer wins, and
a much longer, slightly worse answer can win too. RL against the reward model can therefore
length-hack, and length-normalized checkpoint selection has something to catch.
"""

from __future__ import annotations

import math
import random

CATEGORIES = {
    "fruits": ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum"],
    "colors": ["red", "blue", "green", "yellow", "black", "white", "pink", "brown"],
    "animals": ["cat", "dog", "cow", "pig", "horse", "duck", "fox", "lion"],
}
SINGULAR = {"fruits": "fruit", "colors": "color", "animals": "animal"}
NAMES = ["Anna", "Ben", "Cara", "Dan", "Eve", "Finn", "Gina", "Hugo", "Ida", "Jack", "Kim", "Leo"]
PHRASES = {
    "list": ["List {n} {category}.", "Name {n} {category}.", "Give me {n} {category}.", "Write {n} {category}."],
    "yesno": ["Is {thing} {kind}?", "Question: is {thing} {kind}?"],
    "count": ["Count from {start} to {end}.", "Count up from {start} to {end}."],
    "greet": ["Say hello to {name}.", "Greet {name}.", "Write a greeting for {name}."],
}
FAMILIES = list(PHRASES)
# Quality-neutral politeness: stripped before judging, so it only adds length.
FILLER_PREFIXES = ["Sure! ", "Here you go: ", "Of course. ", "Okay: "]
FILLER_SUFFIXES = [" I hope this helps!", " Have a nice day!", " Enjoy!"]

DEFAULT_CHAT_SPLITS = {"train": 4000, "validation": 128, "test": 200}
DEFAULT_LENGTH_BIAS = 0.01  # utility per response character; a full quality point = 100 chars
HELD_OUT_SHARE = 0.2  # of each family's distinct prompts, split between validation and test


def _with_article(word: str) -> str:
    """'an apple', 'a fox', but bare colour names ('black')."""
    if word in CATEGORIES["colors"]:
        return word
    return ("an " if word[0] in "aeiou" else "a ") + word


def family_prompts(family: str) -> list[tuple[str, dict]]:
    """Every distinct (prompt, params) of a family, in a fixed order."""
    prompts = []
    for phrase in PHRASES[family]:
        if family == "list":
            grid = [{"category": c, "n": n} for c in CATEGORIES for n in (2, 3, 4)]
        elif family == "yesno":
            grid = [
                {"word": w, "category": c}
                for c in CATEGORIES
                for w in sorted({x for items in CATEGORIES.values() for x in items})
            ]
        elif family == "count":
            grid = [{"start": a, "end": a + span} for a in range(0, 41) for span in range(2, 7)]
        else:
            grid = [{"name": name} for name in NAMES]
        for params in grid:
            fields = dict(params)
            if family == "yesno":
                fields.update(thing=_with_article(params["word"]), kind=_with_article(SINGULAR[params["category"]]))
            prompts.append((phrase.format(**fields), params))
    return prompts


def reference_answer(family: str, params: dict, rng: random.Random) -> str:
    """The ideal response (for lists, a random choice of valid items)."""
    if family == "list":
        return ", ".join(rng.sample(CATEGORIES[params["category"]], params["n"]))
    if family == "yesno":
        return "Yes." if params["word"] in CATEGORIES[params["category"]] else "No."
    if family == "count":
        return " ".join(str(k) for k in range(params["start"], params["end"] + 1))
    return f"Hello, {params['name']}!"


def generate_chat_splits(seed: int, sizes: dict = DEFAULT_CHAT_SPLITS) -> dict[str, list[dict]]:
    """Each family's distinct prompts are shuffled and cut into train / held-out pools (the
    held-out share split evenly between validation and test), so a held-out prompt never
    appears in train; records draw a family uniformly, then a prompt from that split's pool
    (pools are small, so prompts repeat within a split, with fresh list references)."""
    rng = random.Random(seed)
    pools: dict[str, dict[str, list]] = {name: {} for name in sizes}
    held_out_names = [name for name in sizes if name != "train"]
    for family in FAMILIES:
        prompts = family_prompts(family)
        rng.shuffle(prompts)
        held = max(len(held_out_names), round(HELD_OUT_SHARE * len(prompts)))
        pools.setdefault("train", {})[family] = prompts[held:]
        for index, name in enumerate(held_out_names):
            pools[name][family] = prompts[index : held : len(held_out_names)]
    splits = {}
    for name, size in sizes.items():
        records = []
        for index in range(size):
            family = rng.choice(FAMILIES)
            prompt, params = rng.choice(pools[name][family])
            records.append(
                {
                    "id": f"tiny_chat-{name}-{index:05d}",
                    "prompt": prompt,
                    "family": family,
                    "params": params,
                    "reference": reference_answer(family, params, rng),
                }
            )
        splits[name] = records
    return splits


def strip_filler(response: str) -> str:
    """Remove the quality-neutral polite prefixes and suffixes (repeatedly)."""
    core, changed = response.strip(), True
    while changed:
        changed = False
        for prefix in FILLER_PREFIXES:
            if core.startswith(prefix.strip()):
                core, changed = core[len(prefix.strip()) :].strip(), True
        for suffix in FILLER_SUFFIXES:
            if core.endswith(suffix.strip()):
                core, changed = core[: -len(suffix.strip())].strip(), True
    return core


def quality(record: dict, response: str) -> float:
    """Hidden correctness/format score in [0, 1]; filler and elaboration do not change it."""
    core, family, params = strip_filler(response), record["family"], record["params"]
    if family == "list":
        items = [item.strip() for item in core.rstrip(".").split(",") if item.strip()]
        valid = {item for item in items if item in CATEGORIES[params["category"]]}
        score = min(len(valid), params["n"]) / params["n"] - 0.25 * abs(len(items) - params["n"])
    elif family == "yesno":
        answer = record["reference"].rstrip(".")
        opposite = "No" if answer == "Yes" else "Yes"
        score = (
            1.0
            if core.startswith(answer)
            else 0.0
            if core.startswith(opposite)
            else 0.3
            if core.startswith("Maybe")
            else 0.0
        )
    elif family == "count":
        expected = record["reference"].split()
        got = core.replace(",", " ").split()
        score = (
            1.0
            if got == expected
            else len(set(got) & set(expected)) / len(expected) - 0.25 * abs(len(got) - len(expected)) - 0.25
        )
    else:
        name = params["name"]
        score = (0.5 if core.startswith(("Hello", "Hi")) else 0.2 if core else 0.0) + (
            0.5 if core.rstrip("!. ").endswith(name) else 0.0
        )
    return max(0.0, min(1.0, score))


def utility(record: dict, response: str, length_bias: float = DEFAULT_LENGTH_BIAS) -> float:
    """What the reward model is trained to rank by: quality plus a mild length bonus."""
    return quality(record, response) + length_bias * len(response)


def preference_probability(
    record: dict, response_a: str, response_b: str, length_bias: float = DEFAULT_LENGTH_BIAS, temperature: float = 0.1
) -> float:
    """Soft Bradley-Terry label P(a preferred over b) = sigmoid(du / temperature)."""
    delta = utility(record, response_a, length_bias) - utility(record, response_b, length_bias)
    return 1.0 / (1.0 + math.exp(-delta / temperature))


def core_variants(record: dict, rng: random.Random) -> list[str]:
    """Candidate answers of mixed quality and length (no filler), the first one the reference."""
    family, params, reference = record["family"], record["params"], record["reference"]
    if family == "list":
        pool, n = CATEGORIES[params["category"]], params["n"]
        other = rng.choice([c for c in sorted(CATEGORIES) if c != params["category"]])
        items = reference.split(", ")
        extra = [x for x in pool if x not in items]
        return [
            reference,
            ", ".join(items + rng.sample(extra, 1)),  # one item too many
            ", ".join(items + rng.sample(extra, 2)),  # two too many
            ", ".join(items[:-1]),  # one too few
            ", ".join(items[:-1] + [rng.choice(CATEGORIES[other])]),  # wrong category
            ", ".join(rng.sample(CATEGORIES[other], n)),
        ]  # all wrong
    if family == "yesno":
        word, singular = params["word"], SINGULAR[params["category"]]
        thing, kind = _with_article(word), _with_article(singular)
        yes, no = f"Yes, {thing} is {kind}.", f"No, {thing} is not {kind}."
        if reference == "Yes.":
            return ["Yes.", yes, "No.", no, "Maybe."]
        return ["No.", no, "Yes.", yes, "Maybe."]
    if family == "count":
        numbers = reference.split()
        start, end = params["start"], params["end"]
        return [
            reference,
            " ".join(numbers + [str(end + 1)]),  # one too far
            " ".join(numbers[:-1]),  # stops early
            " ".join(numbers[:1] + numbers[2:]),  # skips one
            ", ".join(numbers),  # comma style, still right
            " ".join(str(k) for k in range(start + 1, end + 2)),
        ]  # shifted
    name = params["name"]
    other = rng.choice([n for n in NAMES if n != name])
    return [
        reference,
        f"Hi, {name}!",
        "Hello!",
        f"Hello, {other}!",
        f"Goodbye, {name}!",
        f"Hello there, my dear friend {name}!",
    ]


def add_filler(response: str, rng: random.Random) -> str:
    """Wrap a response in polite filler: a prefix, a suffix or both."""
    kind = rng.randrange(3)
    prefix = rng.choice(FILLER_PREFIXES) if kind in (0, 2) else ""
    suffix = rng.choice(FILLER_SUFFIXES) if kind in (1, 2) else ""
    return prefix + response + suffix


def sample_response(record: dict, rng: random.Random, filler_rate: float = 0.3) -> str:
    """One synthetic response: any variant, sometimes wrapped in filler."""
    response = rng.choice(core_variants(record, rng))
    return add_filler(response, rng) if rng.random() < filler_rate else response


def sft_response(record: dict, rng: random.Random) -> str:
    """The seed policy's chat target: the reference half the time, else a mediocre variant,
    a fifth of them with filler, so the seed is far from the reward model's optimum."""
    variants = core_variants(record, rng)
    response = variants[0] if rng.random() < 0.5 else rng.choice(variants[1:])
    return add_filler(response, rng) if rng.random() < 0.2 else response


def make_preference_groups(records: list[dict], count: int, rng: random.Random, group_size: int = 4) -> list[dict]:
    """``count`` groups ``{"record", "responses"}`` of `group_size` distinct synthetic responses
    to one prompt; every pair within a group is a training comparison (more pairs per forward
    pass than independent pairs)."""
    groups = []
    while len(groups) < count:
        record = rng.choice(records)
        responses: list[str] = []
        for _ in range(50 * group_size):
            response = sample_response(record, rng)
            if response not in responses:
                responses.append(response)
            if len(responses) == group_size:
                groups.append({"record": record, "responses": responses})
                break
    return groups


def make_preference_pairs(
    records: list[dict],
    count: int,
    rng: random.Random,
    length_bias: float = DEFAULT_LENGTH_BIAS,
    temperature: float = 0.1,
) -> list[dict]:
    """``count`` pairs ``{"prompt", "a", "b", "p_a", "quality_a", "quality_b"}`` with distinct
    responses; ``p_a`` is the soft label that `a` is preferred."""
    pairs = []
    while len(pairs) < count:
        record = rng.choice(records)
        a, b = sample_response(record, rng), sample_response(record, rng)
        if a == b:
            continue
        pairs.append(
            {
                "prompt": record["prompt"],
                "a": a,
                "b": b,
                "p_a": preference_probability(record, a, b, length_bias, temperature),
                "quality_a": quality(record, a),
                "quality_b": quality(record, b),
            }
        )
    return pairs
