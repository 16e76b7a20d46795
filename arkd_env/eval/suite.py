"""The paper-protocol evaluation suite: five instruction-following sets, sampled answers, ROUGE-L per set.

It follows the protocol of the MiniLLM / DistiLLM / ABKD line of work, so numbers are comparable with theirs:

- **Sets** (MiniLLM's names and folder layout under one directory, see :data:`SET_FILES`): DollyEval
  (``dolly``), SelfInst (``self_inst``), VicunaEval (``vicuna``), S-NI (``sinst``) and UnNI (``uinst``). Each is
  a JSON Lines (or JSON list) file of objects with ``instruction``, optional ``input`` (or ``context``) and
  ``output`` (or ``response``), the output being one reference string or a list of references. A row with no
  ``instruction`` may give a ready ``prompt`` instead (MiniLLM writes newlines in it as ``<n>``).
- **Loading rules**, applied in this order, file order kept: a row whose first reference has fewer than
  ``min_reference_words`` words is dropped (words = whitespace-separated pieces of the text, so the
  selection does not depend on any model's tokenizer; by default 11 for S-NI and UnNI, whose MiniLLM
  subsets are the "11_" ones); a prompt (Alpaca-style template, ``<bos>`` included when the tokenizer has
  one) longer than ``max_prompt_length`` tokens of the student's tokenizer is dropped; then the first
  ``max_examples`` remaining rows are kept (10,000 for UnNI).
- **Generation**: pure sampling (temperature 1.0, top-p 1.0, no top-k) with each seed of ``seeds``
  (10, 20, 30, 40, 50), the torch RNG seeded once per (set, seed) pass; every response may have
  ``max_length - max_prompt_length`` new tokens (512 - 256), as MiniLLM pads every prompt to 256 tokens.
- **Scores**: ROUGE-L of :func:`arkd_env.eval.metrics.rouge_l` (rouge-score ``rougeL``, stemmer on, F-measure,
  best over references, ×100) averaged over a set's examples for each seed, then reported as the mean and
  the sample standard deviation over the seeds. BERTScore F1 the same way when asked for and available;
  otherwise it is reported as skipped, with the reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from arkd_env.assets import models
from arkd_env.assets.data import _check_json, _read_utf8, collate_prompts, encode_prompts, format_prompt, pad_token_id
from arkd_env.config import SUITE_SETS, ConfigError, SuiteConfig
from arkd_env.eval import metrics, stats

SET_NAMES: dict[str, str] = {"dolly": "DollyEval", "self_inst": "SelfInst", "vicuna": "VicunaEval",
                             "sinst": "S-NI", "uinst": "UnNI"}
# Where each set lies under eval_suite.dir; the first path is MiniLLM's layout, the others are accepted too.
SET_FILES: dict[str, tuple[str, ...]] = {
    "dolly": ("dolly/valid.jsonl", "dolly/valid.json", "dolly.jsonl"),
    "self_inst": ("self-inst/valid.jsonl", "self_inst/valid.jsonl", "self-inst/valid.json", "self_inst.jsonl"),
    "vicuna": ("vicuna/valid.jsonl", "vicuna/valid.json", "vicuna.jsonl"),
    "sinst": ("sinst/11_/valid.jsonl", "sinst/valid.jsonl", "sinst/11_/valid.json", "sinst.jsonl"),
    "uinst": ("uinst/11_/valid.jsonl", "uinst/valid.jsonl", "uinst/11_/valid.json", "uinst.jsonl"),
}
# The Hugging Face data sets MiniLLM publishes them in (downloaded where the hub is reachable).
HUB_REPOS: dict[str, str] = {"dolly": "MiniLLM/dolly", "self_inst": "MiniLLM/self-inst", "vicuna": "MiniLLM/Vicuna",
                             "sinst": "MiniLLM/sinst", "uinst": "MiniLLM/uinst"}
TEMPERATURE, TOP_P = 1.0, 1.0
ROUGE_DEFINITION = "rouge-score rougeL, Porter stemmer, F-measure, best over references, x100"
_ENCODE_CHUNK = 1024


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class SuiteExample:
    """One prompt of a set: ``row`` is its 0-based position among the file's rows."""

    row: int
    prompt: str
    prompt_ids: list[int]
    references: list[str]


@dataclass
class LoadStats:
    """What the loading rules did to a set's rows."""

    rows: int = 0
    short_reference: int = 0  # first reference under min_reference_words words: dropped
    long_prompt: int = 0  # prompt over max_prompt_length tokens: dropped
    over_cap: int = 0  # rows left once max_examples were kept (past the reference filter, prompts unread)
    kept: int = 0


@dataclass
class SuiteSet:
    name: str
    path: Path
    examples: list[SuiteExample]
    stats: LoadStats

    @property
    def display(self) -> str:
        return SET_NAMES[self.name]


def locate_set(name: str, cfg: SuiteConfig) -> Path:
    """The file of set ``name``: ``cfg.paths[name]``, else the first of :data:`SET_FILES` under ``cfg.dir``.

    A missing file is a FileNotFoundError whose one line names it and where to get the set.
    """
    if name not in SET_NAMES:
        raise ConfigError(f"unknown evaluation set {name!r} (known: {', '.join(SUITE_SETS)})")
    hint = (f"get it with `huggingface-cli download {HUB_REPOS[name]} --repo-type dataset --local-dir "
            f"DIR/{SET_FILES[name][0].split('/')[0]}` (MiniLLM's release)")
    if name in cfg.paths:
        path = Path(cfg.paths[name]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {SET_NAMES[name]} file not found (eval_suite.paths.{name}); {hint}")
        return path
    if cfg.dir is None:
        raise ConfigError(f"no location for the {SET_NAMES[name]} set: give --suite-dir DIR (or eval_suite.dir, or "
                          f"eval_suite.paths.{name}) with {SET_FILES[name][0]} under it; {hint}")
    root = Path(cfg.dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: evaluation-suite folder not found (eval_suite.dir / --suite-dir)")
    for relative in SET_FILES[name]:
        if (root / relative).is_file():
            return root / relative
    raise FileNotFoundError(f"{root / SET_FILES[name][0]}: {SET_NAMES[name]} file not found (also looked for "
                            f"{', '.join(SET_FILES[name][1:])}); {hint.replace('DIR', str(root))}")


def read_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The objects of a .jsonl or .json file and a label for each (``line N`` / ``row N``) for errors."""
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise ValueError(f"{path}: an evaluation set must be a .jsonl or .json file")
    text = _read_utf8(path)
    if not text.strip():
        raise ValueError(f"{path}: empty evaluation set (the file is empty)")
    _, _, labels, rows = _check_json(path, text)
    assert rows is not None  # _check_json parses every JSON and JSON Lines file
    return rows, labels if labels is not None else [f"row {i + 1}" for i in range(len(rows))]


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def parse_row(row: Mapping[str, Any], where: str, template: str) -> tuple[str, list[str]]:
    """The prompt (Alpaca-style template) and the references of one row of a set."""
    key = "output" if "output" in row else "response"
    if key not in row:
        raise ValueError(f"{where}: missing field 'output' (the reference; found: {', '.join(row) or 'none'})")
    value = row[key]
    references = [value] if isinstance(value, str) else value
    if not isinstance(references, list) or not references or not all(isinstance(r, str) for r in references):
        raise ValueError(f"{where}: field {key!r} must be a string or a non-empty list of strings")
    if "instruction" in row:
        context = row.get("input", row.get("context")) or ""
        prompt = format_prompt(_text(row["instruction"], where, "instruction"),
                               _text(context, where, "input"), template)
    elif "prompt" in row:
        prompt = _text(row["prompt"], where, "prompt").replace("<n>", "\n")
    else:
        raise ValueError(f"{where}: missing field 'instruction' (found: {', '.join(row) or 'none'})")
    return prompt, list(references)


def load_set(name: str, path: Path, tokenizer: Any, *, template: str = "alpaca", max_prompt_length: int = 256,
             min_reference_words: int = 0, max_examples: int = 0) -> SuiteSet:
    """Set ``name`` read from ``path`` with the loading rules of the module docstring (0 = no rule)."""
    rows, labels = read_rows(path)
    load = LoadStats(rows=len(rows))
    candidates: list[tuple[int, str, list[str]]] = []
    for index, (row, label) in enumerate(zip(rows, labels, strict=True)):
        prompt, references = parse_row(row, f"{path}: {label}", template)
        if len(references[0].split()) < min_reference_words:
            load.short_reference += 1
            continue
        candidates.append((index, prompt, references))
    examples: list[SuiteExample] = []
    for start in range(0, len(candidates), _ENCODE_CHUNK):
        chunk = candidates[start:start + _ENCODE_CHUNK]
        for offset, ((index, prompt, references), ids) in enumerate(
                zip(chunk, encode_prompts(tokenizer, [c[1] for c in chunk]), strict=True)):
            if max_examples and len(examples) >= max_examples:
                load.over_cap = len(candidates) - start - offset
                break
            if len(ids) > max_prompt_length:
                load.long_prompt += 1
            else:
                examples.append(SuiteExample(index, prompt, ids, references))
        if load.over_cap:
            break
    load.kept = len(examples)
    if not examples:
        raise ValueError(f"{path}: no usable {SET_NAMES[name]} example out of {load.rows} rows "
                         f"(references under {min_reference_words} words: {load.short_reference}, prompts over "
                         f"{max_prompt_length} tokens: {load.long_prompt})")
    return SuiteSet(name, path, examples, load)


def load_suite(cfg: SuiteConfig, tokenizer: Any, template: str = "alpaca") -> dict[str, SuiteSet]:
    """Every set of ``cfg.sets``, located first so a missing file fails before any is read."""
    paths = {name: locate_set(name, cfg) for name in cfg.sets}
    return {name: load_set(name, path, tokenizer, template=template, max_prompt_length=cfg.max_prompt_length,
                           min_reference_words=cfg.min_reference_words.get(name, 0),
                           max_examples=cfg.max_examples.get(name, 0))
            for name, path in paths.items()}


# ---------------------------------------------------------------------------------------------
# Generating and scoring


def sample_texts(model: Any, tokenizer: Any, examples: Sequence[SuiteExample], seed: int, max_new_tokens: int,
                 batch_size: int, device: torch.device | str = "cpu",
                 on_batch: Callable[[int], None] | None = None) -> list[str]:
    """One sampled response per example (temperature 1, top-p 1), decoded without special tokens and stripped.

    The torch RNG is seeded with ``seed`` once, before the first batch, inside a fork of the RNG state, so the
    caller's random state is untouched and the same (model, examples, seed, batch_size) give the same texts.
    """
    device = torch.device(device)
    pad, eos = pad_token_id(tokenizer), tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    texts: list[str] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(examples), batch_size):
            batch = collate_prompts([e.prompt_ids for e in examples[start:start + batch_size]], pad)
            ids = models.generate_new_tokens(model, batch["input_ids"].to(device),
                                             batch["attention_mask"].to(device), max_new_tokens, sample=True,
                                             pad_token_id=pad, eos_token_id=eos)
            texts += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
            if on_batch is not None:
                on_batch(len(ids))
    model.train(was_training)
    return texts


@dataclass
class SeedRun:
    """One pass over a set with one generation seed: the texts and each example's scores."""

    seed: int
    texts: list[str]
    rouge_l: list[float]
    bertscore_f1: list[float] | None = None

    def mean(self, metric: str) -> float:
        values = getattr(self, metric)
        return stats.mean(values) if values else math.nan


@dataclass
class SetResult:
    name: str
    path: str
    load: LoadStats
    rows: list[int] = field(default_factory=list)  # file row of each example
    runs: list[SeedRun] = field(default_factory=list)

    def per_seed(self, metric: str) -> dict[int, float]:
        return {run.seed: run.mean(metric) for run in self.runs}

    def summary(self, metric: str) -> dict[str, Any]:
        values = list(self.per_seed(metric).values())
        return {"mean": stats.mean(values), "std": stats.sample_std(values),
                "per_seed": {str(k): v for k, v in self.per_seed(metric).items()}}


@dataclass
class SuiteResult:
    """The suite's scores for one student; ``skipped`` maps a metric to why it was not computed."""

    student: str
    sets: dict[str, SetResult]
    protocol: dict[str, Any]
    metrics: list[str]
    skipped: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        sets: dict[str, Any] = {}
        for name, result in self.sets.items():
            entry: dict[str, Any] = {"name": SET_NAMES[name], "path": result.path, "examples": result.load.kept,
                                     "loading": asdict(result.load)}
            for metric in self.metrics:
                entry[metric] = ({"skipped": self.skipped[metric]} if metric in self.skipped
                                 else result.summary(metric))
            sets[name] = entry
        return {"student": self.student, "protocol": self.protocol, "skipped": dict(self.skipped), "sets": sets}


def run_suite(model: Any, tokenizer: Any, sets: Mapping[str, SuiteSet], seeds: Sequence[int], *,
              max_new_tokens: int, batch_size: int = 16, device: torch.device | str = "cpu",
              bertscore: Any = None, bertscore_skipped: str | None = None, student: str = "",
              progress: Callable[[str, int], Callable[[int], None] | None] | None = None) -> SuiteResult:
    """Sample every set with every seed and score the texts.

    ``bertscore`` is a scorer from :func:`arkd_env.eval.metrics.load_bertscore`; ``bertscore_skipped`` the reason
    when BERTScore was asked for but could not be loaded (the metric is then reported as skipped). ``progress``
    (optional) is called with a label and a number of prompts and returns a per-batch callback.
    """
    wanted = ["rouge_l"]
    skipped: dict[str, str] = {}
    if bertscore is not None or bertscore_skipped is not None:
        wanted.append("bertscore_f1")
        if bertscore is None:
            skipped["bertscore_f1"] = bertscore_skipped or "unavailable"
    results: dict[str, SetResult] = {}
    for name, suite_set in sets.items():
        result = SetResult(name, str(suite_set.path), suite_set.stats, [e.row for e in suite_set.examples])
        references = [e.references for e in suite_set.examples]
        for seed in seeds:
            callback = progress(f"{suite_set.display} seed {seed}", len(suite_set.examples)) if progress else None
            texts = sample_texts(model, tokenizer, suite_set.examples, seed, max_new_tokens, batch_size, device,
                                 on_batch=callback)
            run = SeedRun(seed, texts, metrics.rouge_l_scores(texts, references))
            if bertscore is not None:
                run.bertscore_f1 = metrics.bertscore_f1(bertscore, texts, references)
            result.runs.append(run)
        results[name] = result
    protocol = {"seeds": list(seeds), "temperature": TEMPERATURE, "top_p": TOP_P, "top_k": None,
                "max_new_tokens": max_new_tokens, "batch_size": batch_size, "rouge_l": ROUGE_DEFINITION,
                "std": "sample standard deviation over the seeds' set means"}
    return SuiteResult(student, results, protocol, wanted, skipped)


def suite_protocol(cfg: SuiteConfig, template: str) -> dict[str, Any]:
    """The loading settings of a run, recorded next to its scores."""
    return {"template": template, "max_length": cfg.max_length, "max_prompt_length": cfg.max_prompt_length,
            "min_reference_words": {n: cfg.min_reference_words.get(n, 0) for n in cfg.sets},
            "reference_words": "whitespace-separated words of the first reference",
            "max_examples": {n: cfg.max_examples.get(n, 0) for n in cfg.sets}}


# ---------------------------------------------------------------------------------------------
# Reporting

METRIC_LABELS = {"rouge_l": "ROUGE-L", "bertscore_f1": "BERTScore F1"}


def _cell(summary: Mapping[str, Any]) -> str:
    mean, std = summary.get("mean"), summary.get("std")
    if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
        return "n/a"
    return f"{mean:.2f} ({std:.2f})"


def markdown(results: Sequence[SuiteResult]) -> str:
    """One row per (student, metric), one column per set: mean (std) over the generation seeds."""
    if not results:
        return ""
    names = list(results[0].sets)
    head = ["student", "metric", *(SET_NAMES[n] for n in names)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for result in results:
        data = result.to_json()["sets"]
        for metric in result.metrics:
            if metric in result.skipped:
                cells = ["skipped"] * len(names)
            else:
                cells = [_cell(data[n][metric]) if n in data else "n/a" for n in names]
            lines.append("| " + " | ".join([result.student, METRIC_LABELS.get(metric, metric), *cells]) + " |")
    counts = ", ".join(f"{SET_NAMES[n]} {results[0].sets[n].load.kept}" for n in names)
    seeds = results[0].protocol.get("seeds")
    notes = [f"\nMean (sample std) over generation seeds {seeds} of each set's mean score; ROUGE-L is "
             f"{ROUGE_DEFINITION}. Examples: {counts}."]
    reasons = dict.fromkeys((m, why) for result in results for m, why in result.skipped.items())
    notes += [f"{METRIC_LABELS.get(m, m)} skipped: {why}" for m, why in reasons]
    return "\n".join(lines) + "\n" + "\n".join(notes) + "\n"


def generations_jsonl(result: SuiteResult) -> dict[str, str]:
    """Each (set, seed) pass as JSON Lines, keyed by file name: the row, the sampled text and its scores."""
    files = {}
    for name, set_result in result.sets.items():
        for run in set_result.runs:
            lines = []
            for i, text in enumerate(run.texts):
                line: dict[str, Any] = {"row": set_result.rows[i], "text": text, "rouge_l": run.rouge_l[i]}
                if run.bertscore_f1 is not None:
                    line["bertscore_f1"] = run.bertscore_f1[i]
                lines.append(json.dumps(line, ensure_ascii=False) + "\n")
            files[f"{name}_seed{run.seed}.jsonl"] = "".join(lines)
    return files
