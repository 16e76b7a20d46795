from __future__ import annotations

import itertools
import math
import re
from collections import Counter

import pytest

from arkd_env.assets.data import PROMPT_TEMPLATES
from arkd_env.assets.keyed import (
    DEFAULT_POOLS,
    KEYED_TASK,
    MEMBER_NAMES,
    KeyedTaskSpec,
    factorised_validity,
    generate_keyed,
    instruction_for,
    keyed_prompts,
    keyed_vocabulary,
    slot_marginals,
)
from arkd_env.assets.synthetic import (
    OPEN,
    generate_suite,
    head_of,
    normalize_answer,
    suite_vocabulary,
    zipf_probabilities,
)
from arkd_env.eval.exact import exact_scores

TWO_MODES = (("big", "small"), ("cup", "bowl"))


def test_layout_is_fixed_by_the_spec_seed() -> None:
    spec = KeyedTaskSpec(n_keys=6, modes_per_key=5)
    again = KeyedTaskSpec(n_keys=6, modes_per_key=5)
    assert keyed_prompts(spec) == keyed_prompts(again)
    other = keyed_prompts(KeyedTaskSpec(n_keys=6, modes_per_key=5, seed=1))
    assert [p.answers for p in other] != [p.answers for p in keyed_prompts(spec)]


@pytest.mark.parametrize("answer_words", [2, 3])
def test_mixing_two_answers_of_a_key_is_invalid(answer_words: int) -> None:
    spec = KeyedTaskSpec(n_keys=10, modes_per_key=6, answer_words=answer_words)
    prompts = keyed_prompts(spec)
    assert [p.key for p in prompts] == list(range(10))
    for prompt in prompts:
        valid = set(prompt.answers)
        slots = [answer.split() for answer in prompt.answers]
        assert all(len(words) == answer_words for words in slots)
        for j in range(answer_words):
            assert len({words[j] for words in slots}) == 6  # no word shared within a slot
        # Every word-by-word mix of two answers other than the two themselves is invalid for this key.
        for first, second in itertools.combinations(slots, 2):
            for pick in itertools.product((0, 1), repeat=answer_words):
                mixed = " ".join((first, second)[side][j] for j, side in enumerate(pick))
                is_original = len(set(pick)) == 1
                assert (mixed in valid) == is_original, (prompt.key, mixed)
    assert len({frozenset(p.answers) for p in prompts}) == 10  # every key has its own valid set


def test_keys_need_their_own_sets_even_when_the_pools_allow_few() -> None:
    # Two 2-word pools of 2 words admit exactly 2 valid sets: {big cup, small bowl} and {big bowl, small cup}.
    spec = KeyedTaskSpec(n_keys=2, modes_per_key=2, word_pools=TWO_MODES)
    assert spec.layout_capacity() == 2
    sets = {frozenset(p.answers) for p in keyed_prompts(spec)}
    assert sets == {frozenset({"big cup", "small bowl"}), frozenset({"big bowl", "small cup"})}
    with pytest.raises(ValueError, match="n_keys=3: these pools allow only 2 distinct valid sets"):
        KeyedTaskSpec(n_keys=3, modes_per_key=2, word_pools=TWO_MODES)
    # Three words a slot: C(3, 2)^2 word choices times 2 matchings = 18 sets. Independent draws of 18 keys
    # would repeat one almost surely (18!/18^18 < 1e-6); every key still gets its own.
    three = (("big", "small", "tiny"), ("cup", "bowl", "jar"))
    full = KeyedTaskSpec(n_keys=18, modes_per_key=2, word_pools=three)
    assert full.layout_capacity() == 18
    assert len({frozenset(p.answers) for p in keyed_prompts(full)}) == 18


def test_true_distribution_is_zipf_with_the_suites_head_rule() -> None:
    # s = 1 over 4 ranks: sum 1/r = 25/12, so p = (12, 6, 4, 3) / 25; 0.48 < 0.5 <= 0.72 puts two in the head.
    assert zipf_probabilities(4, 1.0) == pytest.approx((12 / 25, 6 / 25, 4 / 25, 3 / 25))
    assert zipf_probabilities(3, 0.0) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    spec = KeyedTaskSpec(n_keys=3, modes_per_key=4, zipf_exponent=1.0)
    for prompt in keyed_prompts(spec):
        p = prompt.distribution
        assert list(p) == list(prompt.answers)
        assert list(p.values()) == pytest.approx([0.48, 0.24, 0.16, 0.12])
        assert prompt.head == prompt.answers[:2] and prompt.tail == prompt.answers[2:]
    assert head_of({"x": 0.5, "y": 0.3, "z": 0.2}) == ("x",)  # mass reaching exactly one half ends the head
    assert head_of({"x": 0.4, "y": 0.35, "z": 0.25}) == ("x", "y")


def test_instructions_spell_the_key_digit_by_digit() -> None:
    assert instruction_for(3, 2) == "Name a pair from basket 3."
    assert instruction_for(12, 3) == "Name a triple from basket 1 2."
    prompts = keyed_prompts(KeyedTaskSpec(n_keys=12, modes_per_key=3))
    assert prompts[11].instruction == "Name a pair from basket 1 1."
    assert len({p.instruction for p in prompts}) == 12
    token = re.compile(r"[A-Za-z]+|[0-9]|\.")
    for p in prompts:  # word-level tokens: whole words, single digits and the final full stop
        assert all(token.fullmatch(t) for t in normalize_answer(p.instruction).split())


def test_examples_are_open_records_drawn_from_the_true_distribution() -> None:
    spec = KeyedTaskSpec(n_keys=4, modes_per_key=5)
    prompts = keyed_prompts(spec)
    examples = generate_keyed(spec, 4000, seed=7)
    assert examples == generate_keyed(spec, 4000, seed=7)
    assert examples[:100] == generate_keyed(spec, 100, seed=7)
    assert examples != generate_keyed(spec, 4000, seed=8)
    synthetic_fields = set(generate_suite(1, seed=0)[0].to_record())
    for i, example in enumerate(examples):
        record = example.to_record()
        assert set(record) == synthetic_fields
        prompt = prompts[i % 4]  # keys cycle, so every prefix is balanced
        assert record["instruction"] == prompt.instruction and record["context"] == ""
        assert (record["task"], record["kind"], record["distribution"]) == (KEYED_TASK, OPEN, f"keyed_{i % 4}")
        assert record["response"] in prompt.distribution
    for prompt in prompts:
        counts = Counter(e.response for e in examples if e.instruction == prompt.instruction)
        tvd = 0.5 * sum(abs(pa - counts[a] / 1000) for a, pa in prompt.distribution.items())
        assert tvd < 0.06, (prompt.key, tvd)
    with pytest.raises(ValueError, match="num_examples=0"):
        generate_keyed(spec, 0, seed=0)


def test_default_pools_do_not_collide_with_the_suite_or_the_templates() -> None:
    template_words = {w for t in PROMPT_TEMPLATES.values() for text in t.values()
                      for w in normalize_answer(text.format(instruction="", input="")).lower().split()}
    instruction_words = {w for n in (2, 3) for w in normalize_answer(instruction_for(0, n)).lower().split()}
    taken = {w.lower() for w in suite_vocabulary()} | template_words | instruction_words
    pool_words = [w for pool in DEFAULT_POOLS for w in pool]
    assert len(pool_words) == len(set(pool_words)) == 72
    assert not set(pool_words) & taken


def test_vocabulary_covers_every_text() -> None:
    spec = KeyedTaskSpec(n_keys=11, modes_per_key=4, answer_words=3)
    vocab = set(keyed_vocabulary(spec))
    for example in generate_keyed(spec, 200, seed=0):
        assert set(normalize_answer(f"{example.instruction} {example.response}").split()) <= vocab


def test_a_word_by_word_model_puts_hand_computed_mass_on_invalid_answers() -> None:
    # Two modes with s = 1: p = (2/3, 1/3). Each word's marginal is its answer's p, so the product of the
    # marginals gives the valid answers (2/3)^L + (1/3)^L: 5/9 for pairs, 1/3 for triples.
    pair = keyed_prompts(KeyedTaskSpec(n_keys=1, modes_per_key=2, word_pools=TWO_MODES))[0]
    assert factorised_validity(pair) == pytest.approx(5 / 9)
    triple = keyed_prompts(KeyedTaskSpec(n_keys=1, modes_per_key=2, answer_words=3))[0]
    assert factorised_validity(triple) == pytest.approx(1 / 3)
    # Three modes: p = (6, 3, 2) / 11, valid mass (36 + 9 + 4) / 121.
    three = keyed_prompts(KeyedTaskSpec(n_keys=1, modes_per_key=3))[0]
    assert factorised_validity(three) == pytest.approx(49 / 121)

    # Brute force over every word combination: the product of marginals is a distribution, and the 4/9 that
    # is not on the two valid pairs lies on the two mixtures of them.
    marginals = slot_marginals(pair)
    product = {f"{w0} {w1}": m0 * m1 for (w0, m0), (w1, m1) in itertools.product(*(m.items() for m in marginals))}
    assert math.fsum(product.values()) == pytest.approx(1.0)
    invalid = {a: v for a, v in product.items() if a not in pair.distribution}
    assert len(invalid) == 2 and math.fsum(invalid.values()) == pytest.approx(4 / 9)

    # Scored exactly against the truth: head = the top pair (2/3), tail = the other (1/3).
    q = {a: product[a] for a in pair.answers}  # 4/9 and 1/9
    s = exact_scores(pair.distribution, q, pair.head)
    assert (s.validity_mass, s.head_recall, s.tail_recall) == (
        pytest.approx(5 / 9), pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert s.score == pytest.approx(40 / 81)  # 1/F = 9/10 + 3/8 + 3/4
    assert s.exact_kl == pytest.approx(2 / 3 * math.log(3 / 2) + 1 / 3 * math.log(3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_keys": 0}, r"KeyedTaskSpec\.n_keys=0: must be at least 1"),
        ({"n_keys": True}, r"KeyedTaskSpec\.n_keys=True: must be an integer"),
        ({"modes_per_key": 1}, r"KeyedTaskSpec\.modes_per_key=1: must be at least 2"),
        ({"modes_per_key": 25}, r"KeyedTaskSpec\.modes_per_key=25: the pool of slot 0 has only 24 words"),
        ({"answer_words": 4}, r"KeyedTaskSpec\.answer_words=4: must be 2 or 3"),
        ({"zipf_exponent": -0.5}, r"KeyedTaskSpec\.zipf_exponent=-0\.5: must be a finite number >= 0"),
        ({"zipf_exponent": math.inf}, r"KeyedTaskSpec\.zipf_exponent=inf"),
        ({"seed": 1.5}, r"KeyedTaskSpec\.seed=1\.5: must be an integer"),
        ({"word_pools": (("big", "small"),)}, r"KeyedTaskSpec\.word_pools=.*must be a tuple of 2 pools"),
        ({"word_pools": (["big", "small"], ("cup", "bowl"))}, r"KeyedTaskSpec\.word_pools\[0\]=.*tuple of words"),
        ({"word_pools": (("big", "Small"), ("cup", "bowl"))}, r"word_pools\[0\]: 'Small' is not a word"),
        ({"word_pools": (("big", "small"), ("cup", "two cups"))}, r"word_pools\[1\]: 'two cups' is not a word"),
        ({"word_pools": (("big", "small", "big"), ("cup", "bowl"))}, r"word_pools\[0\]: 'big' occurs more"),
        ({"word_pools": (("big", "small"), ("cup",))}, r"modes_per_key=2: the pool of slot 1 has only 1 words"),
        ({"n_keys": 3, "family_size": 2}, r"KeyedTaskSpec\.n_keys=3: must be a multiple of family_size=2"),
        ({"n_keys": 4, "modes_per_key": 8, "family_size": 4},
         r"family_size=4: a family needs 26 distinct words per slot \(2 shared answers and 6 of each"),
        ({"family_size": 0}, r"KeyedTaskSpec\.family_size=0: must lie in \[1, 8\], one member name each"),
        ({"n_keys": 9, "family_size": 9}, r"KeyedTaskSpec\.family_size=9: must lie in \[1, 8\]"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"n_keys": 1, "modes_per_key": 2}
    with pytest.raises(ValueError, match=message):
        KeyedTaskSpec(**{**base, **kwargs})  # type: ignore[arg-type]


def test_family_members_share_the_head_and_nothing_else() -> None:
    spec = KeyedTaskSpec(n_keys=8, modes_per_key=6, family_size=4)
    prompts = keyed_prompts(spec)
    assert spec.shared_answers() == 2 and spec.family_words() == 18
    for family in (prompts[:4], prompts[4:]):
        heads = {p.head for p in family}
        assert len(heads) == 1 and all(p.answers[:2] == p.head for p in family)
        words = [w for p in family for a in p.tail for w in enumerate(a.split())]
        words += [w for a in family[0].head for w in enumerate(a.split())]
        assert len(words) == len(set(words)) == 2 * 18  # no word twice in one slot of a family
    assert prompts[0].head != prompts[4].head
    assert prompts[6].instruction == "Name a pair from the third basket on shelf 1."
    assert prompts == keyed_prompts(KeyedTaskSpec(n_keys=8, modes_per_key=6, family_size=4))
    # Families leave the independent layout of the same seed as it was.
    assert keyed_prompts(KeyedTaskSpec(n_keys=8, modes_per_key=6))[0].instruction == "Name a pair from basket 0."


def test_the_config_allows_exactly_the_family_sizes_there_are_member_names_for() -> None:
    from arkd_env.config import MAX_FAMILY_SIZE, ConfigError, KeyedConfig

    assert len(MEMBER_NAMES) == MAX_FAMILY_SIZE
    KeyedConfig(n_keys=2 * MAX_FAMILY_SIZE, family_size=MAX_FAMILY_SIZE)
    with pytest.raises(ConfigError, match=r"data\.keyed\.family_size=9: must be at most 8 and divide n_keys=18"):
        KeyedConfig(n_keys=18, family_size=9)
