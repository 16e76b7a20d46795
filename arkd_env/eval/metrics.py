"""Text metrics of generated responses: ROUGE-L (always) and BERTScore (optional extra).

ROUGE-L is computed here and nowhere else in ARKD, in the form the MiniLLM / DistiLLM / ABKD line of work
reports: the ``rouge-score`` package's ``rougeL`` with its Porter stemmer on, the F-measure, the best score
over a prompt's references, times 100.

BERTScore needs ``pip install 'arkd[bertscore]'`` (the ``bert-score`` package) and its model weights
(roberta-large by default) in the local Hugging Face cache or reachable on the hub. When either is missing
:func:`load_bertscore` raises :class:`MetricUnavailable` with one line saying why, and callers report the
metric as skipped rather than as a number.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

DEFAULT_BERTSCORE_MODEL = "roberta-large"


class MetricUnavailable(Exception):
    """An optional metric cannot be computed here; the message says why in one line."""


@functools.cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def _as_references(references: str | Sequence[str]) -> list[str]:
    refs = [references] if isinstance(references, str) else [str(r) for r in references]
    if not refs:
        raise ValueError("ROUGE-L needs at least one reference")
    return refs


def rouge_l(prediction: str, references: str | Sequence[str]) -> float:
    """ROUGE-L F-measure ×100 of ``prediction`` against its best reference (stemmed, rouge-score's tokenizer)."""
    scorer = _rouge_scorer()
    return 100.0 * max(scorer.score(ref, prediction)["rougeL"].fmeasure for ref in _as_references(references))


def rouge_l_scores(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> list[float]:
    """:func:`rouge_l` of each prediction against its own reference(s)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference entries")
    return [rouge_l(p, r) for p, r in zip(predictions, references, strict=True)]


def load_bertscore(model_type: str = DEFAULT_BERTSCORE_MODEL, device: str | None = None,
                   batch_size: int = 32) -> Any:
    """A ``bert_score.BERTScorer``; :class:`MetricUnavailable` when the package or the model is missing."""
    try:
        import bert_score
    except ImportError:
        raise MetricUnavailable("the bert-score package is not installed (pip install 'arkd[bertscore]')") from None
    try:
        return bert_score.BERTScorer(model_type=model_type, device=device, batch_size=batch_size)
    except Exception as err:  # hub/offline failures surface as OSError, ValueError or requests errors
        first = " ".join(str(err).split())[:200] or type(err).__name__
        raise MetricUnavailable(f"BERTScore model {model_type!r} could not be loaded (offline, or not in the "
                                f"Hugging Face cache?): {first}") from None


def bertscore_f1(scorer: Any, predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> list[float]:
    """BERTScore F1 ×100 of each prediction, best over its references (bert-score's multi-reference rule)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference entries")
    if not predictions:
        return []
    refs = [_as_references(r) for r in references]
    _, _, f1 = scorer.score(list(predictions), refs)
    return [100.0 * float(v) for v in f1.tolist()]
