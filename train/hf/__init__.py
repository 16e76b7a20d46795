"""ARKD inside a transformers/TRL training script: the weighted-divergence loss and the weighting callback.

    trainer = ARKDTrainer(model=student, teacher_model=teacher, args=TrainingArguments(...),
                          train_dataset=..., callbacks=[WeightingCallback("linear:1->0", every=10)])
"""

from train.hf.callback import PolicyHost, WeightingCallback
from train.hf.loss import ARKDTrainer, DistillationMixin, distillation_loss

__all__ = ["ARKDTrainer", "DistillationMixin", "PolicyHost", "WeightingCallback", "distillation_loss"]
