"""Which way a metric improves: the one rule the reward, the greedy heuristic and comparison tables share."""

from __future__ import annotations

HIGHER_IS_BETTER = ("episode_return", "rouge_l", "exact_match", "tail_coverage", "score", "validity", "overlap",
                    "head_recall", "tail_recall")
LOWER_IS_BETTER = ("val_", "test_", "open_kl", "open_tvd", "invalid_rate")
NO_RANKING = ("n_deterministic", "n_open", "true_tail_share", "tail_share")


def direction(metric: str) -> int:
    """+1 when larger is better, -1 when smaller is better, 0 for descriptive columns.

    A ``val_``/``test_`` prefix names the split, not the quantity, so ``test_rouge_l`` improves upwards like
    ``rouge_l`` while ``val_divergence`` improves downwards."""
    if metric in NO_RANKING:
        return 0
    base = metric.split("_", 1)[1] if metric.startswith(("val_", "test_")) else metric
    if base.startswith(HIGHER_IS_BETTER):
        return 1
    if metric.startswith(LOWER_IS_BETTER) or base.startswith(LOWER_IS_BETTER):
        return -1
    return 0


def higher_is_better(metric: str) -> bool:
    return direction(metric) > 0


def as_loss(metric: str, value: float) -> float:
    """``value`` turned so that lower is better, whichever way ``metric`` improves."""
    return -value if higher_is_better(metric) else value
