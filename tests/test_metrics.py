"""arkd_env/eval/metrics.py: ROUGE-L equals the rouge-score package on hand-made pairs; BERTScore is optional."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
import torch
from rouge_score import rouge_scorer

from arkd_env.eval import metrics
from arkd_env.eval.metrics import MetricUnavailable, bertscore_f1, load_bertscore, rouge_l, rouge_l_scores

PAIRS = [
    ("The cat sat on the mat.", "the cat is on the mat"),
    ("Paris is the capital of France", "The capital of France is Paris."),
    ("running dogs jumped", "The dog runs and jumps over the fence"),
    ("", "an empty prediction scores zero"),
    ("Completely unrelated words here", "nothing in common at all"),
    ("1. Mix flour and water\n2. Bake for 20 minutes", "Mix the flour with water, then bake it for 20 minutes."),
]


def _package(prediction: str, reference: str) -> float:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return 100.0 * scorer.score(reference, prediction)["rougeL"].fmeasure


@pytest.mark.parametrize(("prediction", "reference"), PAIRS)
def test_rouge_l_equals_the_package(prediction: str, reference: str) -> None:
    assert rouge_l(prediction, reference) == pytest.approx(_package(prediction, reference), abs=1e-12)


def test_rouge_l_by_hand() -> None:
    # LCS of "the cat sat on the mat" and "the cat is on the mat" is "the cat on the mat": P = R = 5/6.
    assert rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(100 * 5 / 6)
    # The Porter stemmer is on: cats -> cat, running/runs -> run, so these match fully.
    assert rouge_l("cats running", "cat runs") == pytest.approx(100.0)
    assert rouge_l("", "anything") == 0.0


def test_best_reference_counts() -> None:
    prediction = "the cat sat on the mat"
    references = ["a dog barked", "the cat is on the mat", "cat"]
    expected = max(_package(prediction, r) for r in references)
    assert rouge_l(prediction, references) == pytest.approx(expected) and expected == pytest.approx(100 * 5 / 6)
    assert rouge_l(prediction, ("the cat sat on the mat",)) == 100.0
    scores = rouge_l_scores([prediction, "dog"], [references, "a dog barked"])
    assert scores == pytest.approx([expected, _package("dog", "a dog barked")])
    with pytest.raises(ValueError, match="reference"):
        rouge_l(prediction, [])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        rouge_l_scores(["a", "b"], ["a"])


def test_bertscore_without_the_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bert_score", None)  # import bert_score now raises ImportError
    with pytest.raises(MetricUnavailable, match=r"pip install 'arkd\[bertscore\]'"):
        load_bertscore()


def _fake_bert_score(scorer_class: type) -> types.ModuleType:
    module = types.ModuleType("bert_score")
    module.BERTScorer = scorer_class  # type: ignore[attr-defined]
    return module


def test_bertscore_model_that_cannot_load_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    class Offline:
        def __init__(self, **kwargs: Any) -> None:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files,\nand they are "
                          "not in the cached files.")

    monkeypatch.setitem(sys.modules, "bert_score", _fake_bert_score(Offline))
    with pytest.raises(MetricUnavailable) as caught:
        load_bertscore("roberta-large")
    message = str(caught.value)
    assert "'roberta-large' could not be loaded" in message and "\n" not in message


def test_bertscore_scales_and_passes_every_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class Scorer:
        def __init__(self, **kwargs: Any) -> None:
            seen["kwargs"] = kwargs

        def score(self, cands: list[str], refs: list[list[str]]) -> tuple[torch.Tensor, ...]:
            seen["refs"] = refs
            f1 = torch.tensor([0.5 + 0.1 * i for i in range(len(cands))])
            return f1, f1, f1

    monkeypatch.setitem(sys.modules, "bert_score", _fake_bert_score(Scorer))
    scorer = load_bertscore("some-model", device="cpu")
    assert seen["kwargs"]["model_type"] == "some-model"
    assert bertscore_f1(scorer, ["a", "b"], ["x", ["y", "z"]]) == pytest.approx([50.0, 60.0])
    assert seen["refs"] == [["x"], ["y", "z"]]
    assert bertscore_f1(scorer, [], []) == []
    assert metrics.DEFAULT_BERTSCORE_MODEL == "roberta-large"
