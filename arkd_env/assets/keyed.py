"""Keyed multi-word open tasks: a testbed where mode-seeking and mean-seeking students differ measurably.

The open tasks of :mod:`arkd_env.assets.synthetic` ("Name a fruit.") have one-word answers, so any softmax
over the vocabulary represents their answer distribution exactly and forward and reverse KL share one
optimum. Here every answer is two or three words and the valid combinations depend on a key in the prompt:

    Name a pair from basket 1 2.   ->   "glass cup" (most likely), "stone bowl", "paper kite", ...

**Layout.** Each key ``k`` in ``range(n_keys)`` draws, for every answer slot, ``modes_per_key`` distinct
words from that slot's pool; the r-th answer of the key joins the r-th word of every slot. Because no two
answers of one key share a word in the same slot, a word in a slot identifies the answer it belongs to, and
any mix of the words of two valid answers of the same key ("glass bowl") is invalid for that key. A student
that averages two modes therefore produces invalid answers, while one that collapses on a mode stays valid
but loses the rest -- the trade-off the exact metrics of :mod:`arkd_env.eval.exact` measure. Keys reuse
words in other combinations, and every key has its own valid set (the layout redraws a key whose set equals
an earlier key's), so what is valid, and how likely, can only be read from the key. ``n_keys`` is the knob
for how much the student has to condition on.

**Families** (``family_size > 1``). Consecutive keys form families of ``family_size`` members that share
their head answers (the same strings at the same ranks) while each member has tail answers of its own, and
no word occurs in the same slot of two answers of one family. The prompt names the family by its digits and
the member by an ordinal word ("Name a pair from the third basket on shelf 1."), so a student that reads the
family but not the member sees one context where the truth has ``family_size``; a student given one input
embedding for every ordinal (``data.keyed.member_blind``, :data:`MEMBER_NAMES`) never sees more. Over those
aliased contexts the forward-KL optimum is their arithmetic mean (every member's tail: valid for one member
only), the reverse-KL optimum their normalised geometric mean (only the answers valid for all: the shared
head). For such a student validity and tail recall move in opposite directions with the weighting; a
student that tells the members apart meets neither limit (docs/results/history.md, designs 4 and 5, measure both).

**True distribution.** Per key, Zipf over its ranked answers, ``p(a_r) = r^-s / sum_j j^-s``, and the
*head* is the shortest most-likely-first prefix whose mass reaches one half, as in the synthetic suite.
Since ``p`` is non-increasing, the first ``K - 1`` of ``K >= 2`` answers hold at least half the mass, so
the tail is never empty.

**Not factorisable.** Slot ``j``'s marginal gives the word of answer ``r`` the probability ``p(a_r)``
(that word occurs in no other answer of the key), so a model predicting each word independently of the
previous ones -- at best the product of the slot marginals -- puts only ``sum_r p(a_r)^L`` on valid
answers for ``L``-word answers. With two modes and ``s = 1``, ``p = (2/3, 1/3)``: ``5/9`` valid for pairs,
``1/3`` for triples. :func:`factorised_validity` computes this from the marginals.

**Text.** Instructions, keys and answers are whole lowercase words and digits separated by single spaces
(the key is spelled digit by digit, "basket 1 2", so the ten digit tokens serve any number of keys), which
the embedded word-level tokenizer encodes without unknown tokens. The default pools share no word with the
synthetic suite's vocabulary, so a keyed answer is never also an answer of an older task.

Examples are :class:`~arkd_env.assets.synthetic.SyntheticExample` records of kind ``open`` (task
``"keyed"``, distribution ``"keyed_<k>"``), so they travel through :mod:`arkd_env.assets.data` unchanged.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from functools import cache

from arkd_env.assets.synthetic import DIGITS, OPEN, SyntheticExample, head_of, normalize_answer, zipf_probabilities

KEYED_TASK = "keyed"

# Slot pools: no colours, fruits, animals, number words or Greek letters (the synthetic suite's answers),
# and none of the prompt template's or the instruction's words. Pairs use the last two pools ("glass cup"),
# triples all three ("big glass cup"), so default answers read as ordinary noun phrases.
ADJECTIVES: tuple[str, ...] = (
    "big", "small", "tiny", "huge", "soft", "hard", "warm", "cold", "old", "new", "tall", "short", "round",
    "flat", "heavy", "light", "smooth", "rough", "thick", "thin", "wide", "narrow", "sharp", "dull",
)
MATERIALS: tuple[str, ...] = (
    "glass", "stone", "metal", "paper", "wooden", "clay", "steel", "brass", "copper", "iron", "cotton", "silk",
    "wool", "leather", "plastic", "rubber", "marble", "bamboo", "tin", "velvet", "linen", "canvas", "ceramic",
    "crystal",
)
NOUNS: tuple[str, ...] = (
    "cup", "bowl", "plate", "jar", "box", "bag", "hat", "coat", "shoe", "sock", "lamp", "chair", "table",
    "bell", "drum", "kite", "rope", "vase", "fork", "spoon", "brush", "comb", "clock", "mirror",
)
DEFAULT_POOLS: tuple[tuple[str, ...], ...] = (ADJECTIVES, MATERIALS, NOUNS)

# A family's members are named by words of their own, not by digits that also spell the family, so that a
# student's view of the member is one set of tokens whose embeddings can be tied without touching the family's.
MEMBER_NAMES: tuple[str, ...] = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")

_ANSWER_NOUN = {2: "pair", 3: "triple"}
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class KeyedTaskSpec:
    """What a keyed task is: its size, its Zipf law, its answer length and word pools, and its layout seed.

    ``word_pools`` holds one pool per answer slot (``answer_words`` of them); ``None`` takes the last
    ``answer_words`` of :data:`DEFAULT_POOLS`. ``seed`` fixes which answers each key accepts and in what
    order; the draws of training examples take their own seed (:func:`generate_keyed`). ``family_size``
    keys in a row share their head answers (module docstring, "Families"); 1 makes every key independent.
    """

    n_keys: int = 8
    modes_per_key: int = 8
    zipf_exponent: float = 1.0
    answer_words: int = 2
    word_pools: tuple[tuple[str, ...], ...] | None = None
    seed: int = 0
    family_size: int = 1

    def __post_init__(self) -> None:
        for name in ("n_keys", "modes_per_key", "answer_words", "seed", "family_size"):
            value = getattr(self, name)
            # bool is an int subclass, and True keys or modes are a typo, not a size.
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"KeyedTaskSpec.{name}={value!r}: must be an integer")
        if self.n_keys < 1:
            raise ValueError(f"KeyedTaskSpec.n_keys={self.n_keys}: must be at least 1")
        if not 1 <= self.family_size <= len(MEMBER_NAMES):
            raise ValueError(f"KeyedTaskSpec.family_size={self.family_size}: must lie in [1, {len(MEMBER_NAMES)}], "
                             f"one member name each")
        if self.modes_per_key < 2:
            raise ValueError(f"KeyedTaskSpec.modes_per_key={self.modes_per_key}: must be at least 2, "
                             f"or there is no tail and no mode to drop")
        if self.answer_words not in _ANSWER_NOUN:
            raise ValueError(f"KeyedTaskSpec.answer_words={self.answer_words}: must be 2 or 3")
        s = self.zipf_exponent
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
            raise ValueError(f"KeyedTaskSpec.zipf_exponent={s!r}: must be a finite number >= 0")
        self._check_pools()
        if self.family_size > 1:
            self._check_families()
            return
        capacity = self.layout_capacity()
        if self.n_keys > capacity:
            raise ValueError(f"KeyedTaskSpec.n_keys={self.n_keys}: these pools allow only {capacity} distinct "
                             f"valid sets of {self.modes_per_key} answers, and every key needs its own")

    def _check_pools(self) -> None:
        pools = self.word_pools
        if pools is not None:
            if not isinstance(pools, tuple) or len(pools) != self.answer_words:
                raise ValueError(f"KeyedTaskSpec.word_pools={pools!r}: must be a tuple of {self.answer_words} "
                                 f"pools, one per answer slot")
            for j, pool in enumerate(pools):
                if not isinstance(pool, tuple):
                    raise ValueError(f"KeyedTaskSpec.word_pools[{j}]={pool!r}: must be a tuple of words")
                for word in pool:
                    if not isinstance(word, str) or not _WORD.fullmatch(word):
                        raise ValueError(f"KeyedTaskSpec.word_pools[{j}]: {word!r} is not a word of lowercase "
                                         f"letters a-z")
                if len(set(pool)) != len(pool):
                    repeated = next(w for w in pool if pool.count(w) > 1)
                    raise ValueError(f"KeyedTaskSpec.word_pools[{j}]: {repeated!r} occurs more than once")
        # The default pools are checked too: their 24 words cap modes_per_key as well.
        for j, pool in enumerate(self.pools):
            if len(pool) < self.modes_per_key:
                raise ValueError(f"KeyedTaskSpec.modes_per_key={self.modes_per_key}: the pool of slot {j} "
                                 f"has only {len(pool)} words")

    def _check_families(self) -> None:
        if self.n_keys % self.family_size:
            raise ValueError(f"KeyedTaskSpec.n_keys={self.n_keys}: must be a multiple of "
                             f"family_size={self.family_size}")
        needed = self.family_words()
        short = [j for j, pool in enumerate(self.pools) if len(pool) < needed]
        if short:
            raise ValueError(f"KeyedTaskSpec.family_size={self.family_size}: a family needs {needed} distinct "
                             f"words per slot ({self.shared_answers()} shared answers and "
                             f"{self.modes_per_key - self.shared_answers()} of each member's own), the pool of "
                             f"slot {short[0]} has {len(self.pools[short[0]])}")

    def shared_answers(self) -> int:
        """How many answers the members of a family share: the head of the Zipf law (all but the first
        ``shared_answers()`` ranks are each member's own)."""
        probabilities = zipf_probabilities(self.modes_per_key, self.zipf_exponent)
        return len(head_of({str(r): p for r, p in enumerate(probabilities)}))

    def family_words(self) -> int:
        """Distinct words a family uses in each slot: the shared answers' and every member's tail's."""
        return self.shared_answers() + self.family_size * (self.modes_per_key - self.shared_answers())

    @property
    def pools(self) -> tuple[tuple[str, ...], ...]:
        """The word pool of each answer slot, defaults resolved."""
        if self.word_pools is not None:
            return self.word_pools
        return DEFAULT_POOLS[len(DEFAULT_POOLS) - self.answer_words:]

    def layout_capacity(self) -> int:
        """How many distinct valid sets a key can have: choose the words of every slot, then match the other
        slots' words to the first slot's in any order."""
        m = self.modes_per_key
        choices: int = math.prod(math.comb(len(pool), m) for pool in self.pools)
        matchings: int = math.factorial(m) ** (self.answer_words - 1)
        return choices * matchings


@dataclass(frozen=True)
class KeyedPrompt:
    """One key of a keyed task: its instruction and its ranked valid answers with their true probabilities."""

    key: int
    instruction: str
    answers: tuple[str, ...]  # most likely first
    probabilities: tuple[float, ...]  # aligned with answers, summing to 1
    head: tuple[str, ...]

    @property
    def distribution(self) -> dict[str, float]:
        """The true answer distribution, most likely answer first."""
        return dict(zip(self.answers, self.probabilities, strict=True))

    @property
    def tail(self) -> tuple[str, ...]:
        """Every valid answer that is not in the head, most likely first."""
        return self.answers[len(self.head):]

    @property
    def distribution_name(self) -> str:
        """The ``distribution`` field of this key's examples."""
        return f"{KEYED_TASK}_{self.key}"


def instruction_for(key: int, answer_words: int, family_size: int = 1) -> str:
    """The instruction of ``key``, e.g. ``"Name a pair from basket 1 2."`` for key 12 and two-word answers,
    or ``"Name a pair from the first basket on shelf 3."`` for the same key in families of 4."""
    noun = _ANSWER_NOUN[answer_words]
    if family_size == 1:
        return f"Name a {noun} from basket {' '.join(str(key))}."
    family, member = divmod(key, family_size)
    return f"Name a {noun} from the {MEMBER_NAMES[member]} basket on shelf {' '.join(str(family))}."


def _family_answers(spec: KeyedTaskSpec, rng: random.Random) -> list[tuple[str, ...]]:
    """The ranked answers of every member of one family: the shared head first, then the member's own."""
    shared = spec.shared_answers()
    own = spec.modes_per_key - shared
    columns = [rng.sample(pool, shared + spec.family_size * own) for pool in spec.pools]
    answers = [" ".join(words) for words in zip(*columns, strict=True)]
    return [(*answers[:shared], *answers[shared + m * own: shared + (m + 1) * own])
            for m in range(spec.family_size)]


def _independent_answers(spec: KeyedTaskSpec, rng: random.Random) -> list[tuple[str, ...]]:
    """The ranked answers of every key, each key's valid set distinct from every earlier one's."""
    seen: set[frozenset[str]] = set()
    layout: list[tuple[str, ...]] = []
    for _ in range(spec.n_keys):
        # Rejection terminates because __post_init__ checked n_keys against the number of distinct sets; far
        # below that number (as for the defaults) a redraw is rare.
        while True:
            columns = [rng.sample(pool, spec.modes_per_key) for pool in spec.pools]
            answers = tuple(" ".join(words) for words in zip(*columns, strict=True))
            if frozenset(answers) not in seen:
                break
        seen.add(frozenset(answers))
        layout.append(answers)
    return layout


@cache
def keyed_prompts(spec: KeyedTaskSpec) -> tuple[KeyedPrompt, ...]:
    """Every key of ``spec`` with its prompt, valid answers, true probabilities and head (key order)."""
    rng = random.Random(spec.seed)
    probabilities = zipf_probabilities(spec.modes_per_key, spec.zipf_exponent)
    if spec.family_size == 1:
        layout = _independent_answers(spec, rng)
    else:
        # Members of one family differ in their tails, so their valid sets are distinct by construction.
        layout = [answers for _ in range(spec.n_keys // spec.family_size) for answers in _family_answers(spec, rng)]
    return tuple(KeyedPrompt(key, instruction_for(key, spec.answer_words, spec.family_size), answers,
                             probabilities, head_of(dict(zip(answers, probabilities, strict=True))))
                 for key, answers in enumerate(layout))


def generate_keyed(spec: KeyedTaskSpec, num_examples: int, seed: int,
                   keys: range | None = None) -> list[SyntheticExample]:
    """``num_examples`` examples cycling through the keys (those of ``keys``, default all), each answer drawn
    from its key's true distribution.

    As in :func:`~arkd_env.assets.synthetic.generate_suite`, cycling keeps every key equally represented in
    any prefix, and a longer list starts with the shorter one of the same seed.
    """
    if num_examples < 1:
        raise ValueError(f"num_examples={num_examples}: a keyed task needs at least one example")
    prompts = keyed_prompts(spec)[slice(keys.start, keys.stop) if keys is not None else slice(None)]
    if not prompts:
        raise ValueError(f"keys={keys}: selects none of the {spec.n_keys} keys")
    rng = random.Random(seed)
    examples: list[SyntheticExample] = []
    for i in range(num_examples):
        prompt = prompts[i % len(prompts)]
        response = rng.choices(prompt.answers, weights=prompt.probabilities, k=1)[0]
        examples.append(SyntheticExample(
            instruction=prompt.instruction,
            context="",
            response=response,
            task=KEYED_TASK,
            kind=OPEN,
            distribution=prompt.distribution_name,
        ))
    return examples


def keyed_vocabulary(spec: KeyedTaskSpec) -> list[str]:
    """Every word a keyed example can contain (instruction words, digits, answer words), first use first."""
    words: list[str] = [*DIGITS]
    for prompt in keyed_prompts(spec):
        words.extend(normalize_answer(prompt.instruction).split())
        for answer in prompt.answers:
            words.extend(answer.split())
    return list(dict.fromkeys(words))


def slot_marginals(prompt: KeyedPrompt) -> tuple[dict[str, float], ...]:
    """The true probability of each word in each answer slot, summed over the answers holding it there."""
    n_slots = len(prompt.answers[0].split())
    marginals: tuple[dict[str, float], ...] = tuple({} for _ in range(n_slots))
    for answer, p in zip(prompt.answers, prompt.probabilities, strict=True):
        for slot, word in zip(marginals, answer.split(), strict=True):
            slot[word] = slot.get(word, 0.0) + p
    return marginals


def factorised_validity(prompt: KeyedPrompt) -> float:
    """The valid mass of the best word-by-word independent model: the product of the slot marginals summed
    over the valid answers. Below 1 for every keyed prompt; the rest falls on invalid word combinations."""
    marginals = slot_marginals(prompt)
    return math.fsum(math.prod(m[w] for m, w in zip(marginals, answer.split(), strict=True))
                     for answer in prompt.answers)

