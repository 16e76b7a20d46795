"""Exact answer-level metrics of an open prompt: no sampling, so no sampling noise.

For an open prompt with a known true distribution ``p`` over its valid answers, the student's probability
``q(a)`` of every valid answer ``a`` is computed exactly by teacher forcing (the product of its token
probabilities, the end-of-answer token included). Every valid answer has ``p(a) > 0``; every other string
is invalid, has ``p = 0``, and together the invalid strings hold the student's remaining mass
``1 - sum_a q(a)``. This module turns ``p``, ``q`` and the head of ``p`` into numbers; it holds no model code.

Per prompt (:func:`exact_scores`):

* ``validity_mass = sum_a q(a)``, the chance that a student sample is a valid answer (precision-like);
* ``overlap = sum_a min(p(a), q(a))``, one minus the total variation distance between the student's and the
  true distribution over all strings (invalid ones included);
* ``head_recall`` and ``tail_recall``: ``sum min(p, q) / sum p`` over the head or the tail answers, the
  share of the true mass of that part that the student reproduces;
* ``exact_kl = KL(p || q) = sum_a p(a) log(p(a) / q(a))`` in nats, the KL between the true and the student's full
  answer distribution (invalid strings add nothing, as ``p`` is 0 there). A softmax student has ``q > 0``,
  so it is finite; a ``q(a) = 0`` makes it ``inf``;
* ``score``, one scalar in which precision and recall both count (below).

**Score.** ``1 / score = 1 / (2 validity_mass) + 1 / (4 head_recall) + 1 / (4 tail_recall)`` (0 when any of them
is 0): the F1 of validity mass and a recall that is itself the harmonic mean of head and tail recall. A
mode-seeking student keeps validity near 1 but its tail recall near 0; a mean-seeking one reaches the tail
but spreads mass onto invalid word mixtures; both score low, and a student ``q = c p`` (the truth with a
share ``1 - c`` leaked to invalid strings) scores exactly ``c``. Recall is split into head and tail because
the overall overlap never exceeds validity (``min(p, q) <= q``), so an F1 of the two would be little more
than the overlap, and the tail, where mode-seeking loses, holds only about half of ``p``. The head term is
needed too: an all-valid student that gives the tail more than ``p`` and the head less would otherwise
reach the optimum. With all three terms the score is 1 exactly when ``q == p``: validity 1 and both recalls
1 need ``q >= p`` on every answer with ``sum q <= 1``.

**Weighing precision** (``beta``, from ``data.keyed.score_beta``). The score is the F-beta measure of validity
mass (precision) and that recall: ``1 / score = w / validity_mass + (1 - w) / 2 * (1 / head_recall + 1 /
tail_recall)`` with ``w = 1 / (1 + beta**2)``. ``beta = 1`` is the F1 above; ``beta = 0.5`` is the F0.5 of fields
where a wrong answer costs more than a missing one (``w = 0.8``). ``q == p`` scores 1 and ``q = c p`` scores
``c`` for every ``beta``.

Tolerance: ``p`` must sum to 1 and ``q`` to at most 1 within ``atol`` (products of float token
probabilities round); validity is clipped to 1 so the rounding cannot lift the score above its optimum.
Over prompts, :func:`mean_scores` averages every field, the score included (not recomputed from the means),
so each prompt counts once whatever its number of answers.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields

DEFAULT_ATOL = 1e-6


@dataclass(frozen=True)
class ExactScores:
    """The exact metrics of one prompt (or their means over prompts, from :func:`mean_scores`)."""

    validity_mass: float
    overlap: float
    head_recall: float
    tail_recall: float
    exact_kl: float
    score: float


def _check(p: Mapping[str, float], q: Mapping[str, float], head: Collection[str], atol: float) -> None:
    if not p:
        raise ValueError("p: the true distribution has no answers")
    for name, dist in (("p", p), ("q", q)):
        for answer, value in dist.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}[{answer!r}]={value!r}: must be a finite number")
    low = [a for a, v in p.items() if v <= 0]
    if low:
        raise ValueError(f"p[{low[0]!r}]={p[low[0]]!r}: valid answers need a positive true probability")
    p_total = math.fsum(p.values())
    if abs(p_total - 1.0) > atol:
        raise ValueError(f"p: sums to {p_total!r}, not 1 (atol={atol})")
    missing, extra = [a for a in p if a not in q], [a for a in q if a not in p]
    if missing or extra:
        raise ValueError(f"q: must give exactly p's answers; missing {missing[:3]}, extra {extra[:3]}")
    outside = [a for a, v in q.items() if not 0.0 <= v <= 1.0]
    if outside:
        raise ValueError(f"q[{outside[0]!r}]={q[outside[0]]!r}: a probability must lie in [0, 1]")
    q_total = math.fsum(q.values())
    if q_total > 1.0 + atol:
        raise ValueError(f"q: sums to {q_total!r} > 1 (atol={atol}); it is one distribution's mass on "
                         f"disjoint answers")
    unknown = [a for a in head if a not in p]
    if unknown:
        raise ValueError(f"head: {unknown[0]!r} is not an answer of p")
    n_head = len(set(head))
    if n_head == 0 or n_head == len(p):
        raise ValueError(f"head: holds {n_head} of p's {len(p)} answers; head and tail recall need both to "
                         f"be non-empty")


def _recall(p: Mapping[str, float], q: Mapping[str, float], answers: Collection[str]) -> float:
    return math.fsum(min(p[a], q[a]) for a in answers) / math.fsum(p[a] for a in answers)


def _kl(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    if any(q[a] == 0.0 for a in p):
        return math.inf
    return math.fsum(pa * math.log(pa / q[a]) for a, pa in p.items())


def combined_score(validity_mass: float, head_recall: float, tail_recall: float, beta: float = 1.0) -> float:
    """The F-beta of ``validity_mass`` and the harmonic mean of ``head_recall`` and ``tail_recall`` (module
    docstring; ``beta`` 1 is the F1)."""
    for name, value in (("validity_mass", validity_mass), ("head_recall", head_recall),
                        ("tail_recall", tail_recall)):
        if not 0.0 <= value <= 1.0:  # also refuses NaN
            raise ValueError(f"{name}={value!r}: must lie in [0, 1]")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < math.inf:
        raise ValueError(f"beta={beta!r}: must be a positive finite number")
    if min(validity_mass, head_recall, tail_recall) == 0.0:
        return 0.0
    w = 1.0 / (1.0 + beta * beta)
    return 1.0 / (w / validity_mass + (1.0 - w) / 2.0 * (1.0 / head_recall + 1.0 / tail_recall))


def exact_scores(p: Mapping[str, float], q: Mapping[str, float], head: Collection[str],
                 atol: float = DEFAULT_ATOL, beta: float = 1.0) -> ExactScores:
    """Every exact metric of one prompt from the true ``p``, the student's ``q`` on the same valid answers,
    and the ``head`` answers of ``p`` (the rest are its tail), the score at ``beta``; inputs checked,
    ``ValueError`` naming the one at fault."""
    _check(p, q, head, atol)
    head_set = set(head)
    tail = [a for a in p if a not in head_set]
    validity = min(1.0, math.fsum(q.values()))
    head_recall = _recall(p, q, head_set)
    tail_recall = _recall(p, q, tail)
    return ExactScores(
        validity_mass=validity,
        overlap=math.fsum(min(pa, q[a]) for a, pa in p.items()),
        head_recall=head_recall,
        tail_recall=tail_recall,
        exact_kl=_kl(p, q),
        score=combined_score(validity, head_recall, tail_recall, beta),
    )


def mean_scores(results: Sequence[ExactScores]) -> ExactScores:
    """Each field averaged over prompts; an ``inf`` KL of any prompt makes the mean KL ``inf``."""
    if not results:
        raise ValueError("results: no prompts to average")
    means = {f.name: math.fsum(getattr(r, f.name) for r in results) / len(results) for f in fields(ExactScores)}
    return ExactScores(**means)
