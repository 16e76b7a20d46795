"""arkd_env/eval/answers.py and the keyed data source: teacher-forced answer probabilities, the records the
keyed benchmark trains on, and the trade-off the benchmark is built on, shown on a student small enough to
reason about by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from arkd_env import losses
from arkd_env.assets.data import TokenizedExample, collate, keyed_records
from arkd_env.assets.keyed import KeyedTaskSpec, keyed_prompts
from arkd_env.config import DataConfig, KeyedConfig
from arkd_env.eval.answers import sequence_log_probs
from arkd_env.eval.exact import exact_scores


class _FixedLogits(torch.nn.Module):
    """A 'model' whose next-token logits are a given table indexed by the current token."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        del attention_mask
        return SimpleNamespace(logits=self.table[input_ids])


def test_sequence_log_probs_sum_the_response_tokens_only() -> None:
    table = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1],
                                    [0.4, 0.3, 0.2, 0.1]]))
    # Sequence 0: prompt [0], response [2, 3] -> q(2|0) q(3|2) = 0.3 * 0.1; sequence 1: prompt [1, 0], response
    # [1] -> q(1|0) = 0.2 (the prompt's own transition 1 -> 0 does not count).
    batch = collate([TokenizedExample([0, 2, 3], prompt_length=1), TokenizedExample([1, 0, 1], prompt_length=2)],
                    pad_token_id=0)
    got = sequence_log_probs(_FixedLogits(table), batch, vocab_size=4)
    assert got.tolist() == pytest.approx([math.log(0.3 * 0.1), math.log(0.2)])


def test_keyed_records_mix_list_tasks_evenly_and_refuse_unknown_ones() -> None:
    cfg = DataConfig(source="keyed", keyed=KeyedConfig(n_keys=4, modes_per_key=4, deterministic_share=0.25))
    records = keyed_records(cfg, 40, seed=0)
    assert len(records) == 40
    kinds = [r["kind"] for r in records]
    assert kinds.count("deterministic") == 10
    for end in (4, 8, 20):  # every prefix keeps about a quarter of list tasks
        assert abs(kinds[:end].count("deterministic") - end / 4) <= 1
    assert {r["task"] for r in records if r["kind"] == "deterministic"} == {"copy", "reverse"}
    assert keyed_records(cfg, 40, seed=0) == records
    bad = DataConfig(source="keyed", keyed=KeyedConfig(deterministic_tasks=["fruit"]))
    with pytest.raises(ValueError, match=r"data\.keyed\.deterministic_tasks: 'fruit' is not a deterministic task"):
        keyed_records(bad, 10, seed=0)


def _fit(weights: dict[str, float], teacher: torch.Tensor, steps: int = 1500) -> torch.Tensor:
    """A factorised student q(w1, w2) = q1(w1) q2(w2), fitted by ARKD's own divergences to ``teacher``."""
    params = torch.zeros(2, 2, requires_grad=True)
    with torch.no_grad():
        params[0, 0] = 0.3  # a slight lean to the first mode, as a random initialisation would have one way
    optimizer = torch.optim.Adam([params], lr=0.05)
    for _ in range(steps):
        q1, q2 = torch.log_softmax(params[0], -1), torch.log_softmax(params[1], -1)
        joint = (q1[:, None] + q2[None, :]).reshape(1, 4)
        loss, _ = losses.mixed_divergence(joint, teacher, weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        q1, q2 = torch.softmax(params[0], -1), torch.softmax(params[1], -1)
        return (q1[:, None] * q2[None, :]).reshape(4)


def test_on_a_bimodal_target_forward_kl_spreads_and_reverse_kl_collapses() -> None:
    """Two valid pairs, (a1 b1) with p = 2/3 and (a2 b2) with 1/3; (a1 b2) and (a2 b1) are invalid. A student that
    picks each word independently cannot be all valid: FKL fits the marginals, 5/9 valid, the tail kept; RKL
    keeps (almost) only the main mode, valid but without the tail -- the trade-off the keyed tasks are built on."""
    p = {"a1 b1": 2 / 3, "a2 b2": 1 / 3}
    eps = 1e-4  # the teacher is a softmax: a little mass on the invalid pairs
    teacher = torch.log(torch.tensor([[2 / 3 - eps, eps, eps, 1 / 3 - eps]]))  # order a1b1, a1b2, a2b1, a2b2

    def scores(q: torch.Tensor) -> Any:
        return exact_scores(p, {"a1 b1": float(q[0]), "a2 b2": float(q[3])}, head=["a1 b1"])

    forward = scores(_fit({"fkl": 1.0}, teacher))
    reverse = scores(_fit({"rkl": 1.0}, teacher))
    assert forward.validity_mass == pytest.approx(5 / 9, abs=0.01)
    assert forward.tail_recall == pytest.approx(1 / 9 / (1 / 3), abs=0.02)  # q(a2 b2) = 1/9 of a true 1/3
    assert reverse.validity_mass > 0.99 and reverse.tail_recall < 0.05
    assert forward.tail_recall > reverse.tail_recall and reverse.validity_mass > forward.validity_mass


def test_a_student_blind_to_the_member_of_a_family_trades_validity_for_the_tail() -> None:
    """The family layout's premise with ARKD's own losses: one answer distribution for all four members of a
    family (a student that reads the shelf but not the basket), fitted to the members' true distributions.
    FKL reaches their arithmetic mean: the shared head plus every member's tail, of which each member finds
    only its own valid (validity 0.612 + 0.388/4 = 0.709, tail recall 1/4). RKL reaches their geometric mean:
    the shared head alone, valid but tail-less."""
    spec = KeyedTaskSpec(n_keys=4, modes_per_key=6, family_size=4)
    family = keyed_prompts(spec)
    outcomes = list(dict.fromkeys(a for prompt in family for a in prompt.answers))  # 2 shared + 4 × 4 own
    eps = 1e-4  # a softmax teacher leaves a little mass on every other answer
    teacher = torch.tensor([[prompt.distribution.get(a, eps) for a in outcomes] for prompt in family]).log()

    def fit(weights: dict[str, float]) -> list[Any]:
        logits = torch.zeros(len(outcomes), requires_grad=True)
        optimizer = torch.optim.Adam([logits], lr=0.05)
        for _ in range(1500):
            shared = torch.log_softmax(logits, -1).expand(len(family), -1)
            loss, _ = losses.mixed_divergence(shared, teacher, weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        q = dict(zip(outcomes, torch.softmax(logits.detach(), -1).tolist(), strict=True))
        return [exact_scores(prompt.distribution, {a: q[a] for a in prompt.answers}, prompt.head)
                for prompt in family]

    forward, reverse = fit({"fkl": 1.0}), fit({"rkl": 1.0})
    head_mass = sum(family[0].probabilities[:2])
    geometric = torch.softmax(teacher.mean(0), -1)  # the RKL optimum; the teacher's eps gives tails a trace
    for prompt, f, r in zip(family, forward, reverse, strict=True):
        assert f.validity_mass == pytest.approx(head_mass + (1 - head_mass) / 4, abs=0.01)
        assert f.tail_recall == pytest.approx(1 / 4, abs=0.01)
        own = sum(float(geometric[outcomes.index(a)]) for a in prompt.answers)
        assert r.validity_mass == pytest.approx(own, abs=0.002) and own > 0.98
        assert r.tail_recall < 0.02 and min(r.head_recall, f.head_recall) > 0.99  # both keep the shared head


def test_a_keyed_env_rewards_the_gain_in_exact_score() -> None:
    """End to end on nano-sized keyed tasks: the exact metrics are validation metrics, and reward='score' pays
    the step's change in ``val_score`` (higher is better, so the gain itself)."""
    import gymnasium as gym
    import numpy as np

    import arkd_env  # noqa: F401 - registers the env

    keyed = {"source": "keyed", "keyed": {"n_keys": 3, "modes_per_key": 3}}
    env = gym.make("arkd_env/Distill-v0", preset="nano", horizon=2, reward="score",
                   engine_overrides={"data": keyed, "teacher_cache": True})
    _, info = env.reset(seed=0)
    before = info["val"]
    assert {"val_score", "val_validity", "val_head_recall", "val_tail_recall", "val_exact_kl"} <= set(before)
    assert 0.0 <= before["val_score"] <= 1.0 and 0.0 <= before["val_validity"] <= 1.0
    _, reward, *_, info = env.step(np.array([0.0], dtype=np.float32))
    assert reward == pytest.approx(info["val"]["val_score"] - before["val_score"])
    env.close()


def test_a_warm_started_student_learns_another_layout_and_repeats_by_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from arkd_env.assets import build
    from arkd_env.assets.build import load_assets, warm_start_examples
    from arkd_env.assets.data import keyed_spec
    from arkd_env.assets.keyed import keyed_prompts
    from arkd_env.config import ConfigError, load_preset

    overrides = ["engine.data.source=keyed", "engine.data.keyed={n_keys: 3, modes_per_key: 3}",
                 "engine.student.pretrain_steps=3", "engine.student.pretrain_batch_size=4"]
    cfg = load_preset("nano", overrides).engine
    assets = load_assets(cfg, torch.device("cpu"))
    examples = warm_start_examples(cfg, assets.tokenizer)
    assert len(examples) == 3 * 4
    # Its keyed answers are those of the next layout, never of the benchmark's own (layout_seed + 1)
    other = dataclasses.replace(cfg.data, keyed=dataclasses.replace(cfg.data.keyed, layout_seed=1))
    theirs = {a for p in keyed_prompts(keyed_spec(other)) for a in p.answers}
    texts = [assets.tokenizer.decode(e.input_ids[e.prompt_length:], skip_special_tokens=True) for e in examples]
    keyed_answers = [t for t in texts if t in theirs]
    assert keyed_answers and all(t in theirs for t in keyed_answers)
    first = assets.new_student(5)
    build._WARM_STUDENTS.clear()  # trained again, not replayed from the memo
    again = assets.new_student(5)
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    # A third student of that seed replays the memo: no training, the same weights, its own tensors.
    monkeypatch.setattr(build, "pretrain", lambda *a, **k: pytest.fail("the warm start ran again"))
    replayed = assets.new_student(5)
    for key, value in first.state_dict().items():
        assert torch.equal(value, replayed.state_dict()[key]), key
    # Runs that train the memoised student or a replayed one must not change what the memo hands the next one.
    with torch.no_grad():
        for parameter in [*again.parameters(), *replayed.parameters()]:
            parameter.add_(1.0)
    for key, value in assets.new_student(5).state_dict().items():
        assert torch.equal(value, first.state_dict()[key]), key
    # Another instance of the same layout (other keys, another score) shares the warm start; another seed not.
    other_instance = dataclasses.replace(cfg, seed=5, data=dataclasses.replace(cfg.data, keyed=dataclasses.replace(
        cfg.data.keyed, student_keys=[0, 1], score_beta=0.5)))
    load_assets(other_instance, torch.device("cpu"))  # builds its seed's student: replayed, or pretrain fails
    with pytest.raises(pytest.fail.Exception, match="the warm start ran again"):
        assets.new_student(6)
    monkeypatch.undo()
    cold = load_assets(dataclasses.replace(cfg, student=dataclasses.replace(cfg.student, pretrain_steps=0)),
                       torch.device("cpu")).new_student(5)
    assert not all(torch.equal(v, cold.state_dict()[k]) for k, v in first.state_dict().items())
    with pytest.raises(ConfigError, match=r"a student warm start is defined for data\.source=keyed only"):
        warm_start_examples(load_preset("nano", ["engine.student.pretrain_steps=3"]).engine, assets.tokenizer)


def test_a_member_blind_student_gives_every_member_the_same_answers_and_shares_the_teacher() -> None:
    """``data.keyed.member_blind``: after training, the student's probability of any answer is the same under
    every member's prompt of a family (the teacher's is not), and the teacher is the one of the sighted layout."""
    import dataclasses

    from arkd_env.assets.build import teacher_cache_dir
    from arkd_env.assets.data import student_prompts
    from arkd_env.config import ConfigError, load_preset
    from arkd_env.engine import Distiller
    from arkd_env.eval.answers import AnswerSet, sequence_log_probs

    keyed = "engine.data.keyed={n_keys: 4, modes_per_key: 4, family_size: 2, member_blind: true}"
    cfg = load_preset("nano", ["engine.data.source=keyed", keyed, "engine.student.pretrain_steps=2",
                               "engine.student.pretrain_batch_size=4"]).engine
    sighted = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, keyed=dataclasses.replace(cfg.data.keyed, member_blind=False)))
    f_half = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, keyed=dataclasses.replace(cfg.data.keyed, score_beta=0.5)))
    assert teacher_cache_dir(cfg) == teacher_cache_dir(sighted) == teacher_cache_dir(f_half)
    engine = Distiller.from_config(cfg, torch.device("cpu"))
    engine.train_steps({"fkl": 1.0}, 4)
    first, second = student_prompts(cfg.data)[:2]
    # The second member's prompt asked for the first member's answers: only the prompt differs.
    swapped = dataclasses.replace(second, answers=first.answers)
    answers = AnswerSet.build([first, swapped], engine.tokenizer, cfg.data, batch_size=64)
    n = len(first.answers)
    with torch.no_grad():
        student = sequence_log_probs(engine.student.eval(), answers.batches[0], engine.vocab_size)
        teacher = sequence_log_probs(engine.teacher, answers.batches[0], engine.vocab_size)
    assert torch.equal(student[:n], student[n:])
    assert not torch.allclose(teacher[:n], teacher[n:], atol=1e-3)
    with pytest.raises(ConfigError, match=r"member_blind=True: needs data\.keyed\.family_size > 1 \(it is 1\)"):
        load_preset("nano", ["engine.data.source=keyed", "engine.data.keyed={n_keys: 4, member_blind: true}"])
    with pytest.raises(ConfigError, match=r"data\.keyed\.score_beta=0\.0: must lie in \[0\.1, 10\]"):
        load_preset("nano", ["engine.data.source=keyed", "engine.data.keyed={n_keys: 4, score_beta: 0}"])
