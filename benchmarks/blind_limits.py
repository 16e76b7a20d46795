"""Where a member-blind student's best answer distribution lies, exactly, under the keyed benchmark's score.

A student that cannot tell a family's members apart (``data.keyed.member_blind``) gives every member one
answer distribution. Over the members' true distributions, forward KL's optimum is their arithmetic mean
(the shared head as it is, every member's tail at 1/F of its probability) and reverse KL's their normalised
geometric mean (the head alone). Both lie on a one-parameter family: the head at ``c·p`` and every member's
tail at ``d·p`` with ``c·H + F·d·T = 1`` (``H``, ``T``: head and tail mass), from ``d = 0`` (reverse KL) through
``d = 1/F`` (forward KL) to all mass on the tails. This script scores every point of that family with the
benchmark's own metrics (:func:`arkd_env.eval.exact.exact_scores`, on layouts from
:func:`arkd_env.assets.keyed.keyed_prompts`) and reports the best ``d`` in units of forward KL's (``d·F``):
above 1, the score wants more tail than forward KL's optimum, so no weighting of FKL and RKL can beat pure
FKL for such a student once it has converged; below 1, the best weighting lies strictly between them.

    python benchmarks/blind_limits.py                       # the grid of docs/results/history.md, design 5
    python benchmarks/blind_limits.py --family-sizes 4 --modes 6 --zipf 1 --points 2001 --beta 0.5
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from arkd_env.assets.keyed import KeyedPrompt, KeyedTaskSpec, keyed_prompts
from arkd_env.eval.exact import ExactScores, exact_scores


@dataclass(frozen=True)
class BlindLimits:
    """The scores of one layout's member-blind limits: RKL's (``d = 0``), FKL's (``d = 1/F``) and the best."""

    family_size: int
    modes: int
    zipf: float
    rkl: ExactScores
    fkl: ExactScores
    best: ExactScores
    best_tail_share: float  # the best d in units of FKL's 1/F


def blind_member_scores(prompt: KeyedPrompt, family_size: int, tail_scale: float,
                        beta: float = 1.0) -> ExactScores:
    """The exact scores, for one member, of the blind distribution whose tails are at ``tail_scale·p``, the
    score at F-``beta``."""
    p = prompt.distribution
    tail = prompt.tail
    head_mass = sum(p[a] for a in prompt.head)
    tail_mass = sum(p[a] for a in tail)
    head_scale = (1.0 - family_size * tail_scale * tail_mass) / head_mass
    if head_scale < 0:
        raise ValueError(f"tail_scale={tail_scale}: puts more than all the mass on the family's tails")
    q = {a: min(1.0, (tail_scale if a in tail else head_scale) * pa) for a, pa in p.items()}
    return exact_scores(p, q, prompt.head, beta=beta)


def blind_limits(family_size: int, modes: int, zipf: float, points: int, beta: float = 1.0) -> BlindLimits:
    """Score ``points`` evenly spaced members of the family (module docstring) on one family's first member;
    every member of a family has the same true probabilities by rank, so one member stands for all."""
    spec = KeyedTaskSpec(n_keys=family_size, modes_per_key=modes, zipf_exponent=zipf, family_size=family_size)
    prompt = keyed_prompts(spec)[0]
    tail_mass = sum(prompt.distribution[a] for a in prompt.tail)
    largest = 1.0 / (family_size * tail_mass)  # every bit of mass on the tails
    scales = [largest * i / (points - 1) for i in range(points)]
    scored = [(blind_member_scores(prompt, family_size, d, beta), d) for d in scales]
    best, best_d = max(scored, key=lambda item: item[0].score)
    return BlindLimits(family_size, modes, zipf, rkl=scored[0][0],
                       fkl=blind_member_scores(prompt, family_size, 1.0 / family_size, beta),
                       best=best, best_tail_share=best_d * family_size)


def table(rows: Sequence[BlindLimits]) -> str:
    lines = ["| F | answers | s | RKL limit: score / validity / tail | FKL limit: score / validity / tail | "
             "best: score / validity / tail | best d·F |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{x.score:.3f} / {x.validity_mass:.3f} / {x.tail_recall:.3f}" for x in (r.rkl, r.fkl, r.best)]
        lines.append(f"| {r.family_size} | {r.modes} | {r.zipf:g} | {' | '.join(cells)} | "
                     f"{r.best_tail_share:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family-sizes", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--modes", type=int, nargs="+", default=[4, 6, 8])
    parser.add_argument("--zipf", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--points", type=int, default=1001, help="points of the family scored (>= 2)")
    parser.add_argument("--beta", type=float, default=1.0, help="the score's F-beta (data.keyed.score_beta)")
    args = parser.parse_args(argv)
    if args.points < 2:
        parser.error(f"--points {args.points}: needs at least 2, the two ends of the family")
    rows = []
    for family_size in args.family_sizes:
        for modes in args.modes:
            for zipf in args.zipf:
                try:
                    rows.append(blind_limits(family_size, modes, zipf, args.points, args.beta))
                except ValueError as err:  # a layout the word pools cannot hold: say so and go on
                    print(f"skipped F={family_size}, answers={modes}, s={zipf:g}: {err}")
    print(table(rows))


if __name__ == "__main__":
    main()
