"""Distillation as a Gymnasium environment, with the action codec and the lookahead its policies share."""

from arkd_env.env.distill_env import DistillEnv
from arkd_env.observation import DEFAULT_FEATURES, FEATURES, PROBE_FEATURES

__all__ = ["DEFAULT_FEATURES", "FEATURES", "PROBE_FEATURES", "DistillEnv"]
