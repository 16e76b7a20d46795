"""The embedded synthetic instruction suite: a controlled testbed with known answers.

Two kinds of task are generated from a seed:

* **deterministic** tasks have exactly one right answer (copy, reverse or sort a short list, add one to
  every digit of a list), so a student's greedy generations are scored by exact match;
* **open** tasks ("Name a fruit.") accept any answer of a category, and the reference answers are drawn
  from a known Zipf-like distribution over that category. Because the true distribution is known,
  a student's *sampled* answers can be compared with it exactly: how far the two distributions are apart,
  and how much of the long tail the student still produces. This is where mode-seeking (reverse KL)
  and mean-seeking (forward KL) distillation visibly differ.

Every text is a sequence of whole words and digits separated by single spaces, so a word-level
tokenizer encodes it without unknown tokens and decodes it back unchanged. Lists hold 3-5 items and
every instruction, context and response is a few words long, so a small transformer learns the suite
in minutes on a CPU.

The true answer distribution of an open task with answers ``a_1..a_K`` (listed most to least likely)
and exponent ``s`` is ``p(a_k) = k^-s / sum_j j^-s``. Its *head* is the shortest prefix of that list
whose mass reaches one half; every other answer is in the *tail*.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache

DETERMINISTIC = "deterministic"
OPEN = "open"

# Symbols of the list tasks: 24 Greek letter names (one word-level token each) and the ten digits.
WORDS: tuple[str, ...] = (
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
    "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega",
)
DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))
MIN_ITEMS = 3
MAX_ITEMS = 5


@dataclass(frozen=True)
class Task:
    """One task of the suite: its instruction and, for open tasks, the ranked valid answers."""

    name: str
    kind: str  # DETERMINISTIC or OPEN
    instruction: str
    answers: tuple[str, ...] = ()  # open tasks: valid answers, most likely first
    zipf_exponent: float = 1.0  # open tasks: s in p(a_k) proportional to k^-s


# Open tasks: ranked answer lists (single words; ranks loosely follow how often people give them).
_FRUITS = (
    "apple", "banana", "orange", "grape", "strawberry", "mango", "pear", "cherry", "peach", "pineapple",
    "lemon", "watermelon", "kiwi", "plum", "blueberry", "raspberry", "apricot", "coconut", "lime", "melon",
    "papaya", "fig", "pomegranate", "grapefruit", "nectarine", "blackberry", "lychee", "guava", "date",
    "quince",
)
_COLOURS = (
    "blue", "red", "green", "yellow", "purple", "black", "white", "pink", "brown", "grey", "violet",
    "cyan", "magenta", "teal", "turquoise", "navy", "maroon", "beige", "gold", "silver", "indigo", "crimson",
    "olive", "ivory",
)
_ANIMALS = (
    "dog", "cat", "lion", "elephant", "tiger", "horse", "rabbit", "bear", "wolf", "monkey", "giraffe",
    "zebra", "fox", "deer", "cow", "pig", "sheep", "goat", "dolphin", "whale", "penguin", "owl", "eagle",
    "snake", "frog", "turtle", "camel", "kangaroo", "panda", "otter", "badger", "hedgehog", "squirrel",
    "beaver", "moose", "koala",
)
# Numbers as words so they never collide with the digit tokens of the arithmetic task.
_NUMBERS = (
    "seven", "three", "five", "ten", "one", "nine", "four", "eight", "two", "six", "twelve", "eleven",
    "thirteen", "twenty", "seventeen", "fifteen", "fourteen", "sixteen", "eighteen", "nineteen", "hundred",
    "thirty", "fifty", "forty", "zero",
)

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("copy", DETERMINISTIC, "Copy the words."),
        Task("reverse", DETERMINISTIC, "Reverse the words."),
        Task("sort", DETERMINISTIC, "Sort the digits."),
        Task("increment", DETERMINISTIC, "Add one to each digit."),
        Task("fruit", OPEN, "Name a fruit.", _FRUITS, 1.0),
        Task("colour", OPEN, "Name a colour.", _COLOURS, 1.2),
        Task("animal", OPEN, "Name an animal.", _ANIMALS, 0.9),
        Task("number", OPEN, "Pick a number.", _NUMBERS, 1.1),
    )
}


@dataclass(frozen=True)
class SyntheticExample:
    """One generated example. ``distribution`` names the true answer distribution ('' if deterministic)."""

    instruction: str
    context: str
    response: str
    task: str
    kind: str
    distribution: str

    def to_record(self) -> dict[str, str]:
        """The instruction/context/response record used by :mod:`arkd_env.assets.data`, metadata kept."""
        return asdict(self)


def answer_distribution(task: str) -> dict[str, float]:
    """The true answer distribution of open task ``task``, most likely answer first."""
    return dict(_distribution(_open_task(task).name))


def zipf_probabilities(n: int, exponent: float) -> tuple[float, ...]:
    """``p_r = r^-s / sum_j j^-s`` for ranks ``r = 1..n`` (the open tasks' law, and the keyed tasks')."""
    weights = [(rank + 1) ** -exponent for rank in range(n)]
    total = math.fsum(weights)
    return tuple(w / total for w in weights)


def head_of(distribution: Mapping[str, float]) -> tuple[str, ...]:
    """The shortest prefix of ``distribution`` (listed most likely first) whose mass reaches one half."""
    head: list[str] = []
    mass = 0.0
    for answer, p in distribution.items():
        head.append(answer)
        mass += p
        if mass >= 0.5:
            break
    return tuple(head)


@cache
def _distribution(name: str) -> tuple[tuple[str, float], ...]:
    spec = TASKS[name]
    probabilities = zipf_probabilities(len(spec.answers), spec.zipf_exponent)
    return tuple(zip(spec.answers, probabilities, strict=True))


def head_answers(task: str) -> tuple[str, ...]:
    """The head of an open task: the shortest most-likely-first prefix whose mass reaches 0.5."""
    return head_of(answer_distribution(task))


def tail_answers(task: str) -> tuple[str, ...]:
    """Every valid answer of an open task that is not in its head."""
    head = set(head_answers(task))
    return tuple(a for a in answer_distribution(task) if a not in head)


def _open_task(name: str) -> Task:
    spec = TASKS.get(name)
    if spec is None or spec.kind != OPEN:
        known = ", ".join(n for n, t in TASKS.items() if t.kind == OPEN)
        raise ValueError(f"task {name!r} is not an open task of the synthetic suite (open tasks: {known})")
    return spec


def _make_example(name: str, rng: random.Random) -> SyntheticExample:
    spec = TASKS[name]
    context = ""
    if name in ("copy", "reverse"):
        items = [rng.choice(WORDS) for _ in range(rng.randint(MIN_ITEMS, MAX_ITEMS))]
        context = " ".join(items)
        response = " ".join(items if name == "copy" else items[::-1])
    elif name == "sort":
        digits = [rng.choice(DIGITS) for _ in range(rng.randint(MIN_ITEMS, MAX_ITEMS))]
        context = " ".join(digits)
        response = " ".join(sorted(digits))  # single characters: string order is numeric order
    elif name == "increment":
        # Digits 0-8 keep every answer one digit. A per-item rule generalises to lists never seen in training;
        # the table of 100 digit sums this task replaced could only be memorised, and validation held out part of it.
        values = [rng.randrange(9) for _ in range(rng.randint(MIN_ITEMS, MAX_ITEMS))]
        context = " ".join(str(v) for v in values)
        response = " ".join(str(v + 1) for v in values)
    else:
        answers, probs = zip(*_distribution(name), strict=True)
        response = rng.choices(answers, weights=probs, k=1)[0]
    return SyntheticExample(
        instruction=spec.instruction,
        context=context,
        response=response,
        task=name,
        kind=spec.kind,
        distribution=name if spec.kind == OPEN else "",
    )


def generate_suite(
    num_examples: int, seed: int, tasks: Sequence[str] | None = None
) -> list[SyntheticExample]:
    """``num_examples`` examples cycling through ``tasks`` (default: all), contents drawn from ``seed``.

    Cycling (rather than drawing the task) keeps every task equally represented in any prefix, so small
    suites stay balanced. The same (num_examples, seed, tasks) always gives the same list.
    """
    if num_examples < 1:
        raise ValueError(f"num_examples={num_examples}: the synthetic suite needs at least one example")
    names = list(tasks) if tasks is not None else list(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown synthetic task {unknown[0] if unknown else '(none given)'!r} "
                         f"(known: {', '.join(TASKS)})")
    rng = random.Random(seed)
    return [_make_example(names[i % len(names)], rng) for i in range(num_examples)]


def suite_vocabulary() -> list[str]:
    """Every word any example of the suite can contain, so a tokenizer built from it never meets <unk>."""
    words: list[str] = [*WORDS, *DIGITS]
    for spec in TASKS.values():
        words.extend(normalize_answer(spec.instruction).split())
        words.extend(spec.answers)
    return list(dict.fromkeys(words))


_TOKEN = re.compile(r"\w+|[^\w\s]+")


def normalize_answer(text: str) -> str:
    """Canonical form for comparison: word/punctuation tokens (as the word-level tokenizer splits them)
    joined by single spaces, so decoding artefacts such as ``"a , b"`` versus ``"a, b"`` do not matter."""
    return " ".join(_TOKEN.findall(text.strip()))


def _field(example: SyntheticExample | Mapping[str, str], key: str) -> str:
    if isinstance(example, SyntheticExample):
        return str(getattr(example, key))
    value = example.get(key)
    if value is None:
        raise ValueError(f"suite_metrics: example record has no {key!r} field (keys: {', '.join(example)})")
    return str(value)


def suite_metrics(
    examples: Sequence[SyntheticExample | Mapping[str, str]], generations: Sequence[str]
) -> dict[str, float]:
    """Score the student's generations for ``examples`` (records or :class:`SyntheticExample`).

    Deterministic tasks (score greedy generations):
      * ``exact_match``: share of generations equal to the reference after :func:`normalize_answer`;
        ``exact_match_<task>`` per task.

    Open tasks (score *sampled* generations; each generation is one draw from the student). A generation
    is valid when its normalised, lower-cased text is one of the task's answers. Per task, the empirical
    distribution q puts count/n on each valid answer and the share of invalid generations on one extra
    "invalid" outcome, which the true distribution p gives probability 0.
      * ``open_tvd``: total variation distance 0.5 * sum |p - q| over answers and the invalid outcome,
        averaged over open tasks (0 = identical, 1 = disjoint; unsmoothed).
      * ``open_kl``: KL(p || q_eps) with add-epsilon smoothing, eps = 0.5:
        q_eps(a) = (count(a) + 0.5) / (n + 0.5 * (K + 1)) over the K answers and the invalid outcome,
        averaged over open tasks (nats).
      * ``tail_share``: of all valid sampled answers (tasks pooled), the share that lies in the tail;
        ``true_tail_share`` is the same quantity under p (weighted by each task's generation count) --
        a mode-seeking student falls below it.
      * ``tail_coverage``: distinct tail answers produced at least once / all tail answers (tasks pooled).
      * ``invalid_rate``: share of open-task generations that are no valid answer.

    A metric whose population is empty (e.g. no deterministic example) is NaN. ``n_deterministic`` and
    ``n_open`` count the examples scored.
    """
    if len(examples) != len(generations):
        raise ValueError(f"suite_metrics: {len(examples)} examples but {len(generations)} generations")
    det_hits: Counter[str] = Counter()
    det_total: Counter[str] = Counter()
    open_samples: dict[str, list[str]] = {}
    for example, generation in zip(examples, generations, strict=True):
        kind, task = _field(example, "kind"), _field(example, "task")
        if kind == DETERMINISTIC:
            det_total[task] += 1
            det_hits[task] += normalize_answer(generation) == normalize_answer(_field(example, "response"))
        elif kind == OPEN:
            open_samples.setdefault(_field(example, "distribution") or task, []).append(generation)
        else:
            raise ValueError(f"suite_metrics: unknown kind {kind!r} of task {task!r}")

    nan = float("nan")
    n_det = sum(det_total.values())
    metrics: dict[str, float] = {"exact_match": sum(det_hits.values()) / n_det if n_det else nan}
    for task in sorted(det_total):
        metrics[f"exact_match_{task}"] = det_hits[task] / det_total[task]
    metrics.update(_open_metrics(open_samples))
    metrics["n_deterministic"] = float(n_det)
    metrics["n_open"] = float(sum(len(s) for s in open_samples.values()))
    return metrics


def _open_metrics(samples: Mapping[str, list[str]], eps: float = 0.5) -> dict[str, float]:
    nan = float("nan")
    tvds: list[float] = []
    kls: list[float] = []
    valid_total = tail_total = invalid_total = n_total = 0
    true_tail_mass = 0.0
    tail_seen = tail_size = 0
    for name, generations in samples.items():
        p = answer_distribution(name)
        tail = set(tail_answers(name))
        answers = [normalize_answer(g).lower() for g in generations]
        counts = Counter(a for a in answers if a in p)
        n = len(answers)
        invalid = n - sum(counts.values())
        tvd = 0.5 * (sum(abs(p[a] - counts[a] / n) for a in p) + invalid / n)
        denom = n + eps * (len(p) + 1)
        kl = sum(pa * math.log(pa / ((counts[a] + eps) / denom)) for a, pa in p.items())
        tvds.append(tvd)
        kls.append(kl)
        valid_total += n - invalid
        tail_total += sum(c for a, c in counts.items() if a in tail)
        invalid_total += invalid
        n_total += n
        true_tail_mass += n * sum(pa for a, pa in p.items() if a in tail)  # p's order: a set's is hash order
        tail_seen += sum(1 for a in tail if counts[a] > 0)
        tail_size += len(tail)
    return {
        "open_tvd": sum(tvds) / len(tvds) if tvds else nan,
        "open_kl": sum(kls) / len(kls) if kls else nan,
        "tail_share": tail_total / valid_total if valid_total else nan,
        "true_tail_share": true_tail_mass / n_total if n_total else nan,
        "tail_coverage": tail_seen / tail_size if tail_size else nan,
        "invalid_rate": invalid_total / n_total if n_total else nan,
    }
