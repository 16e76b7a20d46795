"""Divergences between a teacher's and a student's next-token distributions.

Conventions (shared by every function here):

* ``p = softmax(teacher_logits / T)`` is the teacher, ``q = softmax(student_logits / T)`` the student,
  both computed in float32 whatever the input dtype; the teacher never receives a gradient.
* Logits have shape ``[..., V]``. A divergence is summed over the vocabulary and averaged over the
  token positions where ``mask`` is true (``mask`` broadcastable to ``[...]``, bool or 0/1,
  ``None`` = every position). With no unmasked position the result is ``0.0``, never NaN. Masked
  positions are dropped before any arithmetic, so garbage there cannot leak into values or gradients.
* ``-inf`` logits (a masked vocabulary) follow ``0 * log 0 = 0``: log-probabilities are clamped at
  :data:`LOG_FLOOR`, whose ``exp`` is exactly 0 in float32. Where only one side puts zero mass on an
  entry the true KL is infinite; the clamp turns that into a large finite penalty (about
  ``1e4 * mass``) instead of ``inf``/NaN gradients.
* Temperature divides the logits only; no ``T**2`` factor is applied (the caller may scale).

Three evaluation paths give the same numbers and gradients:

* naive: :func:`mixed_divergence` with ``chunk_size=None`` (plain autograd on full ``[N, V]`` tensors);
* chunked: ``chunk_size=int`` evaluates token chunks inside a custom autograd Function that keeps
  only the ``[N, V]`` gradient of the student logits, never the whole graph;
* fused-linear: :func:`fused_linear_mixed_divergence` forms the logits of both models chunk by chunk
  from hidden states and LM-head weights and accumulates the gradients of the student's hidden
  states, LM-head weight and bias in the same pass, so no ``[N, V]`` tensor ever exists.

A fourth, :func:`mixed_divergence_topk`, scores against a cached top-k teacher. A single divergence is
the mixture with one component: ``mixed_divergence(s, t, [1.0], ("jsd",), component_kwargs={"jsd":
{"beta": 0.3}})``. The package imports only torch.

Modules: ``logprobs`` (the float32 log-softmax and -inf floor), ``pair`` (one chunk's shared
intermediates and the AKL split), ``divergences`` (the components and their registry), ``plan``
(argument validation and row selection), ``mixture`` (full logits, naive or chunked), ``chunked``
(the chunk loop), ``fused`` (hidden states and LM heads), ``topk`` (the teacher cache) and ``stats``
(features and logging).
"""

from arkd_env.losses.divergences import COMPONENTS, ComponentFn, cross_entropy_component, register_component
from arkd_env.losses.fused import auto_chunk_size, fused_linear_mixed_divergence
from arkd_env.losses.logprobs import IGNORE_INDEX, LOG_FLOOR
from arkd_env.losses.mixture import mixed_divergence
from arkd_env.losses.pair import HeadTailSplit
from arkd_env.losses.plan import WeightsLike
from arkd_env.losses.stats import akl_split, distribution_stats
from arkd_env.losses.topk import mixed_divergence_topk, topk_teacher_logprobs

__all__ = [
    "COMPONENTS",
    "IGNORE_INDEX",
    "LOG_FLOOR",
    "ComponentFn",
    "HeadTailSplit",
    "WeightsLike",
    "akl_split",
    "auto_chunk_size",
    "cross_entropy_component",
    "distribution_stats",
    "fused_linear_mixed_divergence",
    "mixed_divergence",
    "mixed_divergence_topk",
    "register_component",
    "topk_teacher_logprobs",
]
