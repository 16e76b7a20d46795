from __future__ import annotations

from train.config import load_run_config
from train.envs import configs_for


def test_an_explicit_engine_seed_replaces_the_training_pool() -> None:
    cfg = load_run_config("nano", None, ["env.train_seeds=[3, 4]", "engine.seed=3", "env.horizon=5"])
    engine, env = configs_for(cfg)
    assert (engine.seed, env.train_seeds) == (3, [3, 4])  # training draws from the pool
    engine, env = configs_for(cfg, engine_seed=100)
    assert (engine.seed, env.train_seeds, env.horizon) == (100, [], 5)  # evaluation runs on its seed only
    assert cfg.env.train_seeds == [3, 4]  # the run's config is left as it was
