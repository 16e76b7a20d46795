"""Distillation as a Gymnasium environment, with the action codec and the lookahead its policies share."""

from arkd_env.env.distill_env import DEFAULT_FEATURES, FEATURES, PROBE_FEATURES, DistillEnv

__all__ = ["DEFAULT_FEATURES", "FEATURES", "PROBE_FEATURES", "DistillEnv"]
