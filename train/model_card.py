"""The model card (``README.md``) of a distilled student folder: where it came from and what it reached.

A student folder leaves the run folder it was made in, so its card says on its own what the hub's model pages
and a reader need: Hugging Face metadata (``library_name``, ``pipeline_tag``, tags) in the YAML header, then
the teacher, the student's starting point, the data, the weighting policy, the weights it chose at each step,
the cost in student updates and the final metrics. It is written with ``huggingface_hub``'s ``ModelCard``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from arkd_env.atomic import atomic_write_text
from arkd_env.config import ModelConfig
from train.config import RunConfig

CARD_FILE = "README.md"
TAGS = ["arkd", "knowledge-distillation", "text-generation"]


def describe_model(model: ModelConfig, preset: str) -> str:
    """One phrase naming where a teacher or student came from, as its config says."""
    if model.name_or_path:
        return f"`{model.name_or_path}`"
    if model.gguf_package:
        return f"the GGUF file of the `{model.gguf_package}` package"
    if model.init_layers is not None:
        return f"layers {model.init_layers} of the teacher"
    kind = (model.arch or {}).get("model_type", "transformer")
    trained = f", trained for {model.pretrain_steps} steps" if model.pretrain_steps else ""
    return f"a randomly initialised {kind} of the `{preset}` preset{trained}"


def card_text(cfg: RunConfig, policy: str, command: str, steps: Sequence[Mapping[str, Any]],
              metrics: Mapping[str, float]) -> str:
    """The whole card, YAML header and Markdown body; ``command`` is the `arkd` command that reproduces the run
    from its ``config.yaml``."""
    data = cfg.engine.data
    header = ModelCardData(library_name="transformers", pipeline_tag="text-generation", tags=TAGS)
    weights = [" ".join(f"{k}={v:.3g}" for k, v in s.get("weights", {}).items()) for s in steps[1:]]
    trajectory = "\n".join(f"| {i + 1} | {w} |" for i, w in enumerate(weights))
    results = "\n".join(f"| {k} | {v:.6g} |" for k, v in sorted(metrics.items()))
    body = f"""
# Student distilled with ARKD

Distilled from the teacher {describe_model(cfg.engine.teacher, cfg.preset)}, starting from
{describe_model(cfg.engine.student, cfg.preset)}, on `{data.source}` (preset `{cfg.preset}`, engine
seed {cfg.engine.seed}), with the weighting policy `{policy}`: {len(weights)} steps of
{cfg.env.updates_per_step} updates of a weighted sum of divergences to the teacher (FKL = forward KL, RKL =
reverse KL).

## Weights chosen at each step

| step | weights |
|---|---|
{trajectory}

## Final metrics

Divergences are to the teacher (lower is better); `test_*` are held-out examples no reward saw;
`student_updates` counts every update the run made, probes included.

| metric | value |
|---|---|
{results}

## Use

```python
from transformers import pipeline

generate = pipeline("text-generation", model="path/to/this/folder")
```

The run's `config.yaml` (in the folder this one was saved in) reproduces it: `{command}`.
"""
    return ModelCard(f"---\n{header.to_yaml()}\n---\n{body}").content


def write_model_card(student_dir: Path, cfg: RunConfig, policy: str, command: str,
                     steps: Sequence[Mapping[str, Any]], metrics: Mapping[str, float]) -> Path:
    return atomic_write_text(student_dir / CARD_FILE, card_text(cfg, policy, command, steps, metrics))
