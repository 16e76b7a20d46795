"""`arkd evaluate --suite paper`: saved students through the paper-protocol evaluation suite.

Writes ``OUT.json`` (per student and set: ROUGE-L mean, std and per-seed values, the loading counts and the
protocol), ``OUT.md`` (one row per student and metric, one column per set, mean (std) over the seeds) and
``OUT_generations/<student>/<set>_seed<k>.jsonl`` (every sampled text with its scores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arkd_env.atomic import atomic_write_text
from arkd_env.eval.suite import SuiteResult
from arkd_env.progress import bar, say
from train.config import RunConfig
from train.runs import write_json

SUITES = ("paper",)


def student_label(student_dir: Path, taken: list[str]) -> str:
    """The run folder's name for ``RUN/student``, else the folder's own name; made unique among ``taken``."""
    resolved = student_dir.resolve()
    base = resolved.parent.name if resolved.name == "student" and resolved.parent.name else resolved.name
    name, k = base or str(student_dir), 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def _check_student(student_dir: Path) -> None:
    if not student_dir.is_dir():
        raise FileNotFoundError(f"{student_dir}: student folder not found")
    if not (student_dir / "config.json").is_file():
        raise FileNotFoundError(f"{student_dir}: not a Hugging Face model folder (no config.json)")


def student_tokenizer(cfg: RunConfig, student_dir: Path) -> Any:
    """The student folder's own tokenizer, else the preset's (built and cached for the built presets)."""
    from arkd_env.assets import models

    if (student_dir / "tokenizer.json").is_file() or (student_dir / "tokenizer_config.json").is_file():
        return models.load_tokenizer(str(student_dir))
    from transformers import AutoTokenizer

    from arkd_env.assets.build import _build_tokenizer, prepare

    built = prepare(cfg.engine)
    return AutoTokenizer.from_pretrained(built / "tokenizer") if built is not None else _build_tokenizer(cfg.engine)


def load_student(student_dir: Path, device: Any) -> Any:
    from arkd_env.assets.models import load_causal_lm

    try:
        model = load_causal_lm(student_dir)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{student_dir}: cannot load the student ({err})") from None
    except Exception as err:
        # torch's weights-only loader raises pickle's UnpicklingError (matched by name: ARKD imports no
        # pickler) when a .bin holds objects other than tensors; its own message runs to several lines.
        if type(err).__name__ != "UnpicklingError":
            raise
        raise ValueError(f"{student_dir}: its weights file holds pickled objects other than tensors, and loading "
                         "those could run code; refused (ARKD saves students as safetensors)") from None
    return model.to(device)


def evaluate_suite(cfg: RunConfig, student_dirs: list[Path], out: Path) -> list[SuiteResult]:
    """Run the suite of ``cfg.eval_suite`` on every student and write OUT.json, OUT.md and the generations."""
    from arkd_env.assets import models
    from arkd_env.eval import metrics
    from arkd_env.eval import suite as evalsuite

    suite = cfg.eval_suite
    for student_dir in student_dirs:
        _check_student(student_dir)
    for name in suite.sets:  # a missing set fails before any model is loaded
        evalsuite.locate_set(name, suite)
    device = models.pick_device(cfg.engine.device, key="engine.device")
    scorer, skipped = None, None
    if suite.bertscore:
        try:
            scorer = metrics.load_bertscore(suite.bertscore_model, str(device), suite.batch_size)
        except metrics.MetricUnavailable as err:
            skipped = str(err)
            say(f"BERTScore skipped: {skipped}")
    template = cfg.engine.data.prompt_template
    max_new_tokens = suite.max_length - suite.max_prompt_length
    results: list[SuiteResult] = []
    labels: list[str] = []
    for student_dir in student_dirs:
        labels.append(student_label(student_dir, labels))
        tokenizer = student_tokenizer(cfg, student_dir)
        sets = evalsuite.load_suite(suite, tokenizer, template)
        model = load_student(student_dir, device)
        total = sum(len(s.examples) for s in sets.values()) * len(suite.seeds)
        progress = bar(total=total, desc=labels[-1], unit="prompt")

        def on_pass(label: str, _: int, progress: Any = progress) -> Any:
            progress.set_description(label)
            return progress.update

        try:
            result = evalsuite.run_suite(model, tokenizer, sets, suite.seeds, max_new_tokens=max_new_tokens,
                                         batch_size=suite.batch_size, device=device, bertscore=scorer,
                                         bertscore_skipped=skipped, student=labels[-1], progress=on_pass)
        finally:
            progress.close()
        result.protocol.update(evalsuite.suite_protocol(suite, template))
        results.append(result)
        for file_name, text in evalsuite.generations_jsonl(result).items():
            atomic_write_text(out.parent / f"{out.stem}_generations" / labels[-1] / file_name, text)
        del model
    write_json(out, {"suite": "paper", "preset": cfg.preset,
                     "students": [{**r.to_json(), "folder": str(d)} for r, d in zip(results, student_dirs,
                                                                                      strict=True)]})
    atomic_write_text(out.with_suffix(".md"), evalsuite.markdown(results))
    return results
