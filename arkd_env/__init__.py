"""ARKD's library core: divergences, models, data, the distillation engine and the Gymnasium environment.

Importing the package registers ``arkd_env/Distill-v1`` (default preset ``blind``) and ``arkd_env/Distill-v0``
(default preset ``embedded``, the default before)::

    import gymnasium, arkd_env
    env = gymnasium.make("arkd_env/Distill-v1", preset="nano")
"""

from gymnasium.envs.registration import register

__version__ = "0.1.0"


class ARKDWarning(UserWarning):
    """Base of ARKD's own warnings, which the `arkd` command shows even when it silences the libraries'."""


# Registered here, once: the entry point adds the reward wrapper a config asks for (arkd_env.env.wrappers).
register(id="arkd_env/Distill-v1", entry_point="arkd_env.env.wrappers:make_distill_env", nondeterministic=True)
# v0 keeps its own default, so code (and agents) written against it get the env they were written for.
register(id="arkd_env/Distill-v0", entry_point="arkd_env.env.wrappers:make_distill_env", nondeterministic=True,
         kwargs={"preset": "embedded"})
