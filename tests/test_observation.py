"""The public observation API: batch features by hand, scaling and bounds, and parity with DistillEnv."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from arkd_env.assets.data import collate
from arkd_env.env import DistillEnv
from arkd_env.eval.direction import as_loss
from arkd_env.observation import (
    DEFAULT_FEATURES,
    FEATURES,
    batch_features,
    build_observation,
    check_features,
    hidden_batch_features,
    observation_space,
)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * np.log(p / q)))


def test_batch_features_by_hand() -> None:
    # Two kept positions over a vocabulary of 3 and one masked position whose values would spoil every mean.
    student = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [1e-6, 1e-6, 1.0]]]))
    teacher = torch.log(torch.tensor([[[0.25, 0.5, 0.25], [0.2, 0.2, 0.6], [1.0, 1e-6, 1e-6]]]))
    mask = torch.tensor([[True, True, False]])
    labels = torch.tensor([[1, 2, 0]])
    q, p = student.exp()[0, :2].numpy().astype(np.float64), teacher.exp()[0, :2].numpy().astype(np.float64)
    features = batch_features(student, teacher, mask, labels)
    assert features["fkl"] == pytest.approx((_kl(p[0], q[0]) + _kl(p[1], q[1])) / 2, rel=1e-5)
    assert features["rkl"] == pytest.approx((_kl(q[0], p[0]) + _kl(q[1], p[1])) / 2, rel=1e-5)
    assert features["student_ce"] == pytest.approx(-(math.log(0.25) + math.log(0.8)) / 2, rel=1e-5)
    assert features["top1_agreement"] == pytest.approx(0.5)  # argmaxes 0 vs 1, then 2 vs 2
    entropy = -(p * np.log(p)).sum(axis=1).mean()
    assert features["teacher_entropy"] == pytest.approx(entropy, rel=1e-5)


def test_batch_features_mask_equals_selected_rows_and_max_rows_cuts() -> None:
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 7, generator=generator), torch.randn(2, 5, 7, generator=generator)
    labels = torch.randint(0, 7, (2, 5), generator=generator)
    mask = torch.rand(2, 5, generator=generator) > 0.4
    masked = batch_features(student, teacher, mask, labels)
    assert masked == pytest.approx(batch_features(student[mask], teacher[mask], labels=labels[mask]))
    first_two = batch_features(student[mask][:2], teacher[mask][:2], labels=labels[mask][:2])
    assert batch_features(student, teacher, mask, labels, max_rows=2) == pytest.approx(first_two)
    assert "student_ce" not in batch_features(student, teacher, mask)
    with pytest.raises(ValueError, match="teacher_logits: vocabulary 6"):
        batch_features(student, teacher[..., :6])


def test_hidden_state_features_equal_the_features_of_the_projected_logits() -> None:
    generator = torch.Generator().manual_seed(1)
    student_hidden = torch.randn(2, 5, 4, generator=generator, requires_grad=True)
    teacher_hidden = torch.randn(2, 5, 6, generator=generator)
    student_head, teacher_head = torch.randn(7, 4, generator=generator), torch.randn(7, 6, generator=generator)
    student_bias, teacher_bias = torch.randn(7, generator=generator), torch.randn(7, generator=generator)
    labels = torch.randint(0, 7, (2, 5), generator=generator)
    mask = torch.rand(2, 5, generator=generator) > 0.3
    student = student_hidden.detach() @ student_head.T + student_bias
    teacher = teacher_hidden @ teacher_head.T + teacher_bias
    for rows in (3, 256):
        expected = batch_features(student, teacher, mask, labels, max_rows=rows)
        got = hidden_batch_features(student_hidden, student_head, teacher_hidden, teacher_head, mask, labels,
                                    student_bias=student_bias, teacher_bias=teacher_bias, max_rows=rows)
        assert got == pytest.approx(expected, rel=1e-5)
    assert hidden_batch_features(student_hidden, student_head, teacher_hidden, teacher_head) == pytest.approx(
        batch_features(student_hidden.detach() @ student_head.T, teacher_hidden @ teacher_head.T), rel=1e-5)
    with pytest.raises(ValueError, match=r"teacher: positions \(2, 4\) != the student's \(2, 5\)"):
        hidden_batch_features(student_hidden, student_head, teacher_hidden[:, :4], teacher_head)
    with pytest.raises(ValueError, match=r"mask: positions \(10,\) != the student's \(2, 5\)"):
        batch_features(student, teacher, mask.reshape(-1))
    with pytest.raises(ValueError, match=r"labels: positions \(10,\) != the student's \(2, 5\)"):
        batch_features(student, teacher, mask, labels.reshape(-1))


def test_build_observation_scales_and_clips() -> None:
    names = ["fkl", "student_entropy", "val_metric", "val_delta", "progress", "grad_norm", "w_fkl", "instance_x"]
    train = {"fkl": math.e - 1, "student_entropy": math.log(16) / 2, "grad_norm": float("nan")}
    obs = build_observation(names, train, val_metric=-2.0, previous_val_metric=1.0, progress=0.25,
                            weights={"fkl": 0.7, "rkl": 0.3}, vocab_size=16, extra={"instance_x": 0.4})
    # val_delta (1 − (−2)) / 1 = 3 is clipped to 1; a NaN becomes 0; entropies are divided by log V.
    assert obs.tolist() == pytest.approx([1.0, 0.5, math.log1p(2.0), 1.0, 0.25, 0.0, 0.7, 0.4], rel=1e-6)
    assert obs.dtype == np.float32 and observation_space(names).contains(obs)


def test_check_features_names_the_unknown_one() -> None:
    check_features([*DEFAULT_FEATURES, "w_rkl"])
    with pytest.raises(ValueError, match="unknown feature 'val_sharpness'"):
        check_features(["fkl", "val_sharpness"])


def test_the_env_observation_is_the_api_on_a_plain_forward() -> None:
    env = DistillEnv(preset="nano", horizon=2, updates_per_step=1)
    obs, info = env.reset(seed=0)
    distiller = env.distiller
    batch = collate(distiller.data.train[: distiller.cfg.batch_size], distiller.pad_id)
    vocab = distiller.vocab_size
    with torch.no_grad():  # a training loop's own forwards, not the engine's row helpers
        student = distiller.student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        teacher = distiller.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    train = batch_features(student[..., :vocab], teacher[..., :vocab], batch["loss_mask"], batch["labels"],
                           temperature=distiller.cfg.temperature, akl_mu=distiller.cfg.akl_mu)
    metric = as_loss(env.reward_metric, info["val"][env.reward_metric])
    expected = build_observation(env.feature_names, train, val_metric=metric, previous_val_metric=metric,
                                 progress=0.0, weights=info["weights"], vocab_size=vocab)
    np.testing.assert_allclose(obs, expected, rtol=1e-5, atol=1e-6)
    assert set(DEFAULT_FEATURES) <= set(FEATURES)
    assert np.count_nonzero(obs) > len(env.feature_names) // 2  # the comparison is not of two zero vectors
