"""train.hf.loss: the Hugging Face convention by hand, the Trainer's logged loss, and the fused path's parity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _hf_tiny import collate, tiny_args, tiny_llama, tiny_rows
from transformers import TrainerCallback

from arkd_env import losses
from train.hf import ARKDTrainer, distillation_loss
from train.hf.loss import check_weights, next_token_rows


def test_next_token_rows_shift_and_mask() -> None:
    targets, mask = next_token_rows(torch.tensor([[-100, -100, 7, 8, -100]]))
    assert targets.tolist() == [[0, 7, 8, 0]] and mask.tolist() == [[False, True, True, False]]


def test_distillation_loss_scores_logits_t_against_label_t_plus_1() -> None:
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 9, generator=generator)
    teacher = torch.randn(2, 5, 11, generator=generator)  # two padded rows beyond the shared vocabulary
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])
    loss, parts = distillation_loss(student, teacher, labels, {"fkl": 0.3, "rkl": 0.7})
    # By hand: positions (0, 1), (0, 2), (0, 3) and (1, 0), (1, 1) predict the labels after them.
    rows = [(0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    s = torch.stack([student[b, t] for b, t in rows])
    t = torch.stack([teacher[b, t, :9] for b, t in rows])
    p, q = t.log_softmax(-1), s.log_softmax(-1)
    fkl = (p.exp() * (p - q)).sum(-1).mean()
    rkl = (q.exp() * (q - p)).sum(-1).mean()
    assert float(loss) == pytest.approx(float(0.3 * fkl + 0.7 * rkl), rel=1e-5)
    assert float(parts["fkl"]) == pytest.approx(float(fkl), rel=1e-5)


def test_check_weights_names_the_bad_entry() -> None:
    assert check_weights({"fkl": 1, "rkl": 0}) == {"fkl": 1.0, "rkl": 0.0}
    with pytest.raises(ValueError, match="unknown component 'kl'"):
        check_weights({"kl": 1.0})
    with pytest.raises(ValueError, match=r"rkl=-0\.5 must be a number >= 0"):
        check_weights({"fkl": 1.0, "rkl": -0.5})


class ExpectedLoss(TrainerCallback):
    """Before each step, the loss the step should log: mixed_divergence on the whole (one-batch) data set."""

    def __init__(self, trainer_box: list[Any]) -> None:
        self.box, self.expected = trainer_box, []

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        trainer = self.box[0]
        batch = collate(list(trainer.train_dataset))
        with torch.no_grad():
            student = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            teacher = trainer.teacher_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        mask = batch["labels"][:, 1:] != -100
        loss, _ = losses.mixed_divergence(student[:, :-1][mask], teacher[:, :-1][mask], dict(trainer.arkd_weights))
        self.expected.append(float(loss))


def _trainer(tmp_path: Path, fused: bool, weights: dict[str, float]) -> tuple[ARKDTrainer, ExpectedLoss]:
    box: list[Any] = []
    expected = ExpectedLoss(box)
    trainer = ARKDTrainer(model=tiny_llama(1), teacher_model=tiny_llama(2, hidden=24), args=tiny_args(tmp_path),
                          train_dataset=tiny_rows(), data_collator=collate, weights=weights, fused=fused,
                          callbacks=[expected])
    box.append(trainer)
    return trainer, expected


@pytest.mark.parametrize("fused", [False, True])
def test_the_logged_loss_is_mixed_divergence_on_the_batch(tmp_path: Path, fused: bool) -> None:
    trainer, expected = _trainer(tmp_path, fused, {"fkl": 0.25, "rkl": 0.75})
    assert (trainer._heads is not None) is fused
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["loss"] for entry in logged] == pytest.approx(expected.expected, rel=1e-4)
    assert expected.expected[-1] < expected.expected[0]  # the student learned
    assert all(entry["arkd/w_fkl"] == 0.25 and entry["arkd/alpha"] == 0.25 for entry in logged)
    # The logged component means make up the logged loss.
    assert [0.25 * e["arkd/fkl"] + 0.75 * e["arkd/rkl"] for e in logged] == pytest.approx([e["loss"] for e in logged],
                                                                                         rel=1e-5)


def test_evaluation_loss_is_the_symmetric_divergence(tmp_path: Path) -> None:
    trainer, _ = _trainer(tmp_path, False, {"fkl": 1.0})
    trainer.eval_dataset = tiny_rows()
    metrics = trainer.evaluate()
    batch = collate(list(tiny_rows()))
    with torch.no_grad():
        s = trainer.model(input_ids=batch["input_ids"]).logits
        t = trainer.teacher_model(input_ids=batch["input_ids"]).logits
    symmetric, _ = distillation_loss(s, t, batch["labels"], {"fkl": 0.5, "rkl": 0.5})
    assert metrics["eval_loss"] == pytest.approx(float(symmetric), rel=1e-5)


def test_a_batch_without_labels_is_one_line(tmp_path: Path) -> None:
    trainer, _ = _trainer(tmp_path, False, {"fkl": 1.0})
    with pytest.raises(ValueError, match="the batch has no 'labels'"):
        trainer.compute_loss(trainer.model, {"input_ids": torch.ones(1, 4, dtype=torch.long)})


def test_a_ddp_wrapped_student_takes_the_plain_path_and_gets_the_fused_loss(tmp_path: Path) -> None:
    """Under DistributedDataParallel the Trainer hands compute_loss the wrapper, whose forward must run for the
    gradient all-reduce: the loss then goes the plain way, equals the fused loss and reaches every parameter (one
    CPU process, gloo)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    trainer, _ = _trainer(tmp_path, True, {"fkl": 0.25, "rkl": 0.75})
    batch = collate(list(tiny_rows()))
    fused_calls: list[int] = []
    fused_loss = trainer._fused_loss
    trainer._fused_loss = lambda *a, **k: fused_calls.append(1) or fused_loss(*a, **k)  # type: ignore[method-assign]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(trainer.model)
        trainer.model.train()
        fused = trainer.compute_loss(trainer.model, batch)
        trainer.arkd_want_features = False
        plain = trainer.compute_loss(wrapped, batch)
        assert fused_calls == [1]  # the bare student fused, the wrapper not
        assert float(plain) == pytest.approx(float(fused), rel=1e-5)
        plain.backward()
        assert all(p.grad is not None for p in trainer.model.parameters() if p.requires_grad)
    finally:
        dist.destroy_process_group()
