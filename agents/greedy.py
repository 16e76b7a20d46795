"""The greedy one-step heuristic: try each candidate weighting, keep the best, undo the probes.

At every step the heuristic asks the env to :meth:`~arkd_env.env.protocol.LookaheadEnv.probe` each candidate
α: run the updates one env step would run with that weighting from the current state, validate, and restore
the state. It picks the candidate whose validation metric is best. An env step therefore costs
(candidates + 1)× the student updates (and candidates × the validation passes): with the default five
candidates, six times the updates of any other policy. :class:`agents.baselines.GreedyPolicy` plays it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from arkd_env.env.actions import alpha_to_weights
from arkd_env.env.protocol import LookaheadEnv
from arkd_env.eval.direction import higher_is_better

DEFAULT_CANDIDATES = (0.0, 0.25, 0.5, 0.75, 1.0)


def distinct_weightings(env: LookaheadEnv, candidates: Sequence[float]) -> list[tuple[float, dict[str, float]]]:
    """The candidates as the env will actually apply them, each weighting once (binary mode has two)."""
    seen: list[dict[str, float]] = []
    result = []
    for alpha in candidates:
        wanted = alpha_to_weights(alpha, env.component_names, env.action_mode)
        applied = env.action_to_weights(env.weights_to_action(wanted))
        if applied not in seen:
            seen.append(applied)
            result.append((alpha, applied))
    return result


def greedy_choice(env: LookaheadEnv, candidates: Sequence[float], updates: int | None = None,
                  metric: str | None = None, maximize: bool | None = None) -> tuple[float, dict[float, float]]:
    """The best candidate α after one probe each, and every candidate's score.

    ``metric`` defaults to the env's reward metric; ``maximize`` to the metric's own direction. A probe that
    ends non-finite scores worst."""
    metric = metric or env.reward_metric
    maximize = higher_is_better(metric) if maximize is None else maximize
    scores: dict[float, float] = {}
    for alpha, weights in distinct_weightings(env, candidates):
        # ROUGE needs generated responses, which validation only makes when asked.
        metrics = env.probe(weights, updates, generate="rouge" in metric)
        if metric not in metrics:
            raise ValueError(f"baseline 'greedy': metric {metric!r} is not among the env's validation metrics "
                             f"{sorted(metrics)}")
        value = float(metrics[metric])
        scores[alpha] = value if math.isfinite(value) else (-math.inf if maximize else math.inf)
    best = (max if maximize else min)(scores, key=lambda a: scores[a])
    return best, scores
