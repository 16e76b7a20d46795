from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from gymnasium import spaces

from agents.spaces import check_spaces, space_from_json, space_to_json


def holder(obs: spaces.Space, act: spaces.Space) -> SimpleNamespace:
    return SimpleNamespace(observation_space=obs, action_space=act)


def test_check_spaces_names_both_spaces() -> None:
    obs3 = spaces.Box(0.0, 1.0, (3,), np.float32)
    obs4 = spaces.Box(0.0, 1.0, (4,), np.float32)
    mix = spaces.Box(-1.0, 1.0, (1,), np.float32)
    check_spaces(holder(obs3, mix), holder(obs3, mix))  # equal spaces pass
    expected = (r"observation space mismatch: the policy expects Box\(0.0, 1.0, \(3,\), float32\) "
                r"but the env has Box\(0.0, 1.0, \(4,\), float32\)")
    with pytest.raises(ValueError, match=expected):
        check_spaces(holder(obs3, mix), holder(obs4, mix))
    expected = r"action space mismatch: .* Box\(-1.0, 1.0, \(1,\), float32\) but the env has Discrete\(2\)"
    with pytest.raises(ValueError, match=expected):
        check_spaces(holder(obs3, mix), holder(obs3, spaces.Discrete(2)))


@pytest.mark.parametrize("space", [
    spaces.Discrete(2),
    spaces.Discrete(3, start=1),
    spaces.Box(-1.0, 1.0, (4,), np.float32),
    spaces.Box(np.array([0.0, -np.inf], dtype=np.float32), np.array([1.0, np.inf], dtype=np.float32)),
])
def test_space_json_round_trip(space: spaces.Space) -> None:
    assert space_from_json(space_to_json(space)) == space


def test_unsupported_space() -> None:
    with pytest.raises(ValueError, match="only Box and Discrete"):
        space_to_json(spaces.MultiBinary(3))
