"""Data: records from files, the hub or built-in sources -> prompt/response token ids -> masked batches.

A *record* is a ``dict[str, str]``: ``instruction`` / ``context`` / ``response`` (plus task metadata for
the synthetic suite) in the ``instruction`` format, or ``text`` in the plain language-model format.
Prompts are written with an Alpaca-style template; the student learns only the response tokens.

Sequence layout of a :class:`TokenizedExample`: ``[<bos>] prompt response <eos>`` where ``<bos>`` is
used only when the tokenizer has a begin token distinct from its end token (GPT-2 and Qwen style
tokenizers get none). ``prompt_length`` counts ``<bos>`` and the prompt. In a batch from :func:`collate`,
``labels[:, t] = input_ids[:, t + 1]`` wherever token ``t + 1`` is a response token (``<eos>`` included)
and -100 elsewhere, so the logits at position t are scored against ``labels[:, t]`` where ``loss_mask``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import io
import itertools
import json
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from arkd_env.assets.locate import FILE_BUILDERS, hub_offline, is_local
from arkd_env.config import ConfigError, DataConfig, KeyedConfig

logger = logging.getLogger(__name__)

# Alpaca-style prompts, in the wording the MiniLLM/DistiLLM line of work trains and evaluates with.
PROMPT_TEMPLATE: dict[str, str] = {
    "with_input": (
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    ),
    "no_input": (
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    ),
}
# The same section headers without the preamble: about 20 fewer tokens per example, for fast tiny presets.
COMPACT_TEMPLATE: dict[str, str] = {
    "with_input": "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
    "no_input": "### Instruction:\n{instruction}\n\n### Response:\n",
}
PROMPT_TEMPLATES: dict[str, dict[str, str]] = {"alpaca": PROMPT_TEMPLATE, "compact": COMPACT_TEMPLATE}

BUILTIN_SOURCES = ("synthetic", "keyed", "chitchat", "chatterbot")
IGNORE_INDEX = -100
# data.format values whose rows arkd_env/assets/formats.py tokenizes one by one: TRL's conversational
# ("messages"), its prompt/completion, or whichever of those or ARKD's instruction rows each row holds ("auto").
ROW_FORMATS: tuple[str, ...] = ("auto", "messages", "prompt_completion")


def format_prompt(instruction: str, context: str = "", template: Mapping[str, str] | str = "alpaca") -> str:
    """The prompt for one record; an empty (or whitespace) context selects the no-input variant."""
    parts = _template(template)
    if context and context.strip():
        return parts["with_input"].format(instruction=instruction, input=context)
    return parts["no_input"].format(instruction=instruction)


def _template(template: Mapping[str, str] | str) -> Mapping[str, str]:
    if not isinstance(template, str):
        return template
    if template not in PROMPT_TEMPLATES:
        raise ConfigError(f"prompt_template={template!r}: must be one of {', '.join(PROMPT_TEMPLATES)}")
    return PROMPT_TEMPLATES[template]


def _template_name(cfg: DataConfig) -> str:
    return cfg.prompt_template


# ---------------------------------------------------------------------------------------------
# Loading records


def load_records(source: str | None, cfg: DataConfig) -> list[dict[str, Any]]:
    """Records of ``source`` (``cfg.source`` when None), capped at ``cfg.num_examples`` (0 = all).

    ``source`` is 'synthetic', 'keyed', 'chitchat', 'chatterbot', a local .json/.jsonl/.csv/.parquet/.txt file,
    or a hub data set name (its 'train' split). Errors name the file, the line or row and the field. With a
    TRL row format (``data.format`` in :data:`ROW_FORMATS`) a file's rows come back as they are, for
    arkd_env/assets/formats.py to check and tokenize one by one.
    """
    source = cfg.source if source is None else source
    if source == "synthetic":
        records = _synthetic_records(cfg)
    elif source == "keyed":
        records = keyed_records(cfg, cfg.num_examples, cfg.split_seed)
    elif source == "chitchat":
        records = _chitchat_records(cfg.num_examples)
    elif source == "chatterbot":
        records = _chatterbot_records(cfg.num_examples)
    else:
        return _dataset_records(source, cfg)
    if cfg.format == "text":
        template = _template_name(cfg)
        records = [{"text": format_prompt(r["instruction"], r["context"], template) + r["response"]}
                   for r in records]
    return records


def _synthetic_records(cfg: DataConfig) -> list[dict[str, str]]:
    from arkd_env.assets.synthetic import generate_suite

    if cfg.num_examples < 1:
        raise ConfigError(f"data.num_examples={cfg.num_examples}: the synthetic suite needs a size >= 1")
    # The suite's own seed is the split seed, so one number fixes the whole data set.
    return [ex.to_record() for ex in generate_suite(cfg.num_examples, cfg.split_seed)]


def keyed_spec(cfg: DataConfig) -> Any:
    """The :class:`~arkd_env.assets.keyed.KeyedTaskSpec` of ``cfg.keyed``."""
    from arkd_env.assets.keyed import KeyedTaskSpec

    k = cfg.keyed
    return KeyedTaskSpec(n_keys=k.n_keys, modes_per_key=k.modes_per_key, zipf_exponent=k.zipf_exponent,
                         answer_words=k.answer_words, seed=k.layout_seed,
                         family_size=k.family_size)


def student_keys(cfg: DataConfig) -> range:
    """The keys the student learns and is scored on (``data.keyed.student_keys``; default every key)."""
    if cfg.keyed.student_keys is None:
        return range(cfg.keyed.n_keys)
    first, count = cfg.keyed.student_keys
    return range(first, first + count)


def student_prompts(cfg: DataConfig) -> Any:
    """The :class:`~arkd_env.assets.keyed.KeyedPrompt` of every key in :func:`student_keys`."""
    from arkd_env.assets.keyed import keyed_prompts

    keys = student_keys(cfg)
    return keyed_prompts(keyed_spec(cfg))[keys.start:keys.stop]


def teacher_view(cfg: DataConfig) -> DataConfig:
    """The data as the teacher (and the tokenizer) sees it: every key of the layout, at the teacher's share of
    list tasks, members told apart, scored at the default F1. Students that differ only in their keys, share,
    blindness or score (instances) then share one teacher."""
    k = cfg.keyed
    plain = KeyedConfig()
    if (k.student_keys is None and k.teacher_deterministic_share is None and k.member_blind == plain.member_blind
            and k.score_beta == plain.score_beta):
        return cfg
    share = k.deterministic_share if k.teacher_deterministic_share is None else k.teacher_deterministic_share
    # How the student is scored, and what it can see, say nothing about the teacher.
    keyed = dataclasses.replace(k, student_keys=None, deterministic_share=share, teacher_deterministic_share=None,
                                member_blind=plain.member_blind, score_beta=plain.score_beta)
    return dataclasses.replace(cfg, keyed=keyed)


def keyed_records(cfg: DataConfig, count: int, seed: int) -> list[dict[str, str]]:
    """``count`` records of the keyed benchmark: a ``deterministic_share`` of list tasks, the rest keyed open
    tasks of :func:`student_keys`, interleaved so that every prefix holds both in proportion (pass
    :func:`teacher_view` of ``cfg`` for the teacher's records)."""
    from arkd_env.assets.keyed import generate_keyed
    from arkd_env.assets.synthetic import DETERMINISTIC, TASKS, generate_suite

    if count < 1:
        raise ConfigError(f"data.num_examples={count}: the keyed tasks need a size >= 1")
    tasks = cfg.keyed.deterministic_tasks
    wrong = [t for t in tasks if t not in TASKS or TASKS[t].kind != DETERMINISTIC]
    if wrong:
        known = [n for n, t in TASKS.items() if t.kind == DETERMINISTIC]
        raise ConfigError(f"data.keyed.deterministic_tasks: {wrong[0]!r} is not a deterministic task "
                          f"(known: {', '.join(known)})")
    n_det = round(count * cfg.keyed.deterministic_share) if tasks else 0
    keyed = [ex.to_record() for ex in generate_keyed(keyed_spec(cfg), max(1, count - n_det), seed,
                                                     student_keys(cfg))]
    listed = [ex.to_record() for ex in generate_suite(n_det, seed, tasks)] if n_det else []
    return _interleave(keyed, listed)  # any prefix (a validation split, a short run) keeps the mix


def _interleave(major: list[T], minor: list[T]) -> list[T]:
    """``major`` with ``minor``'s items spread evenly between its items, both orders kept."""
    merged: list[T] = []
    total = len(major) + len(minor)
    taken = 0
    for position in range(total):
        # Take from ``minor`` whenever it has fallen behind its share of the positions so far.
        if taken < len(minor) and (taken + 1) * total <= (position + 1) * len(minor):
            merged.append(minor[taken])
            taken += 1
        else:
            merged.append(major[position - taken])
    return merged


def _package_dir(package: str, pip_name: str) -> Path:
    """Folder of an installed package found without importing it (its __init__ may be slow or absent)."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModuleNotFoundError(f"data source needs the package {pip_name!r}: pip install {pip_name} "
                                  f"(or pip install 'arkd[smollm2]')")
    return Path(locations[0])


def _pair(prompt: str, response: str) -> dict[str, str]:
    return {"instruction": prompt, "context": "", "response": response}


def _chitchat_records(limit: int) -> list[dict[str, str]]:
    """Consecutive turns of the Chit-Chat Challenge conversations (chitchat-dataset, MIT) as
    prompt -> response pairs; a turn is one speaker's consecutive messages joined by spaces."""
    path = _package_dir("chitchat_dataset", "chitchat-dataset") / "dataset.json"
    with path.open(encoding="utf-8") as handle:
        conversations = json.load(handle)
    records: list[dict[str, str]] = []
    for conversation in conversations.values():
        turns = [" ".join(m["text"].strip() for m in turn if m.get("text")).strip()
                 for turn in conversation.get("messages", [])]
        for prompt, response in itertools.pairwise(turns):
            if prompt and response:
                records.append(_pair(prompt, response))
                if limit and len(records) >= limit:
                    return records
    return records


def _chatterbot_records(limit: int) -> list[dict[str, str]]:
    """Question -> answer pairs of the English ChatterBot corpus (chatterbot-corpus, BSD): every two
    consecutive lines of a conversation, files in name order."""
    import yaml

    folder = _package_dir("chatterbot_corpus", "chatterbot-corpus") / "data" / "english"
    records: list[dict[str, str]] = []
    for path in sorted(folder.glob("*.yml")):
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in content.get("conversations", []) or []:
            lines = [str(x).strip() for x in conversation if isinstance(x, str | int | float)]
            for prompt, response in itertools.pairwise(lines):
                if prompt and response:
                    records.append(_pair(prompt, response))
                    if limit and len(records) >= limit:
                        return records
    return records


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Hide the `datasets` progress bars for tiny local files, restoring the user's setting afterwards."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _dataset_records(source: str, cfg: DataConfig) -> list[dict[str, Any]]:
    import datasets

    if is_local(source):
        path = Path(source).expanduser()
        builder, kwargs, row_names, parsed = _check_file(path, cfg)
        where = str(path)
        with _quiet_datasets():
            try:
                ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
            except Exception as err:  # datasets wraps parser errors in many types; name the file
                if parsed is None:
                    raise ValueError(f"{path}: could not be read as {builder} ({_first_line(err)})") from None
                # Arrow needs one type per column; JSON mixing e.g. numbers and strings is still usable.
                return _json_rows_to_records(parsed, cfg, where, row_names)
    else:
        try:
            with _quiet_datasets():
                ds = datasets.load_dataset(source, split="train")
        except Exception as err:
            if hub_offline(datasets=True):
                raise ValueError(
                    f"data set {source!r} is not a local file and is not in the cache, and "
                    f"HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set: give a local file, or unset those "
                    f"variables to download it"
                ) from None
            raise ValueError(
                f"data set {source!r} could not be loaded from the hub ({_first_line(err)})"
            ) from None
        where, row_names = f"data set {source!r}", None
    if len(ds) == 0:
        raise ValueError(f"{where}: empty data set (no rows)")
    if cfg.num_examples:
        ds = ds.select(range(min(cfg.num_examples, len(ds))))
    return _rows_to_records(ds.column_names, ds.to_list(), cfg, where, row_names)


def _json_rows_to_records(
    rows: list[dict[str, Any]], cfg: DataConfig, where: str, row_names: list[str] | None
) -> list[dict[str, Any]]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if cfg.num_examples:
        rows = rows[: cfg.num_examples]
    return _rows_to_records(columns, rows, cfg, where, row_names)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


FileCheck = tuple[str, dict[str, Any], list[str] | None, list[dict[str, Any]] | None]


def _check_file(path: Path, cfg: DataConfig) -> FileCheck:
    """Validate a local file before `datasets` sees it, so errors can name the line or byte at fault.

    Returns the `datasets` builder, its extra arguments, for JSON Lines the label of each row, and for
    JSON the parsed rows (a fallback when Arrow cannot type a column).
    """
    if not path.exists():
        raise FileNotFoundError(f"{path}: data file not found")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give one data file ({', '.join(FILE_BUILDERS)})")
    suffix = path.suffix.lower()
    if suffix not in FILE_BUILDERS:
        raise ValueError(f"{path}: unsupported file type {suffix or '(none)'!r} "
                         f"(supported: {', '.join(FILE_BUILDERS)})")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty data set (the file is empty)")
    builder = FILE_BUILDERS[suffix]
    if builder == "text" and cfg.format != "text":
        raise ValueError(f"{path}: a .txt file holds plain text; set data.format=text "
                         f"(instruction data needs json, jsonl, csv or parquet)")
    if builder == "parquet":
        _check_parquet(path)
        return builder, {}, None, None
    text = _read_utf8(path)
    if not text.strip():
        raise ValueError(f"{path}: empty data set (the file holds only whitespace)")
    if builder == "json":
        return _check_json(path, text)
    if builder == "csv":
        _check_csv(path, text)
    return builder, {}, None, None


def _check_parquet(path: Path) -> None:
    """Read the footer (schema and row groups) here: a truncated file then fails with one line, not Arrow's log."""
    import pyarrow.parquet as pq

    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError and others for a damaged footer
        raise ValueError(f"{path}: not a readable Parquet file, damaged or truncated ({_first_line(err)})") from None
    if rows == 0:
        raise ValueError(f"{path}: empty data set (the Parquet file has no rows)")


def _check_csv(path: Path, text: str) -> None:
    """Every row has the header's number of fields; the message names the first line that does not."""
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows = 0
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = row
            elif len(row) != len(header):
                raise ValueError(f"{path}: line {reader.line_num}: {len(row)} fields, but the header has "
                                 f"{len(header)} ({', '.join(header)})")
            else:
                rows += 1
    except csv.Error as err:
        raise ValueError(f"{path}: line {reader.line_num}: malformed CSV ({err})") from None
    if rows == 0:
        raise ValueError(f"{path}: empty data set (a header but no rows)")


def _read_utf8(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}: not UTF-8 text: byte offset {err.start} (line {line}) "
                         f"{raw[err.start:err.start + 1]!r}: {err.reason}") from None


def _check_json(path: Path, text: str) -> FileCheck:
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":  # "Extra data" means one object per line: check it as JSON Lines
                raise ValueError(
                    f"{path}: line {err.lineno} column {err.colno}: malformed JSON ({err.msg})"
                ) from None
        else:
            kwargs = _json_layout(path, document)
            rows = document[kwargs["field"]] if "field" in kwargs else document
            return "json", kwargs, None, rows
    labels: list[str] = []
    lines: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}: line {number}: malformed JSON ({err.msg} at column {err.colno})"
            ) from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}: line {number}: expected a JSON object, got {type(row).__name__}")
        labels.append(f"line {number}")
        lines.append(row)
    if not labels:
        raise ValueError(f"{path}: empty data set (no JSON lines)")
    return "json", {}, labels, lines


def _json_layout(path: Path, document: Any) -> dict[str, Any]:
    """`datasets` arguments for a whole-document JSON file: a list of objects, or {key: [objects]}."""
    if isinstance(document, list):
        _check_objects(path, document, "an empty JSON list")
        return {}
    if isinstance(document, dict):
        lists = [k for k, v in document.items() if isinstance(v, list)]
        if len(lists) == 1:
            _check_objects(path, document[lists[0]], f"the list under {lists[0]!r} is empty")
            return {"field": lists[0]}
        raise ValueError(f"{path}: expected a list of objects, or an object with exactly one list of objects "
                         f"(found lists under: {', '.join(lists) or 'none'})")
    raise ValueError(f"{path}: expected a list of JSON objects, got {type(document).__name__}")


def _check_objects(path: Path, rows: list[Any], empty_reason: str) -> None:
    if not rows:
        raise ValueError(f"{path}: empty data set ({empty_reason})")
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        raise ValueError(f"{path}: row {bad + 1}: expected a JSON object, got {type(rows[bad]).__name__}")


def _rows_to_records(
    columns: Sequence[str],
    rows: list[dict[str, Any]],
    cfg: DataConfig,
    where: str,
    row_names: list[str] | None,
) -> list[dict[str, Any]]:
    def label(i: int) -> str:
        return row_names[i] if row_names is not None and i < len(row_names) else f"row {i + 1}"

    if cfg.format in ROW_FORMATS:
        return [dict(row) for row in rows]
    if cfg.format == "text":
        required, key_names = [cfg.text_field], ["text_field"]
    else:
        required = [cfg.instruction_field, cfg.response_field]
        key_names = ["instruction_field", "response_field"]
    for column, key in zip(required, key_names, strict=True):
        if column not in columns:
            trl = [name for name in ("messages", "prompt") if name in columns]
            hint = f", or data.format=auto to read its {trl[0]!r} rows" if trl else ""
            raise ValueError(f"{where}: missing column {column!r} (found: {', '.join(columns) or 'none'}); "
                             f"set data.{key}{hint}")
    records: list[dict[str, str]] = []
    for i, row in enumerate(rows):
        for column in required:
            if row.get(column) is None:
                raise ValueError(f"{where}: {label(i)}: missing field {column!r}")
        if cfg.format == "text":
            records.append({"text": str(row[cfg.text_field])})
        else:
            context = row.get(cfg.context_field)
            records.append({
                "instruction": str(row[cfg.instruction_field]),
                "context": "" if context is None else str(context),
                "response": str(row[cfg.response_field]),
            })
    return records


# ---------------------------------------------------------------------------------------------
# Tokenization


@dataclass
class TokenizedExample:
    """``input_ids`` = [<bos>] + prompt + response + <eos>; ``record_index`` points into the records.

    ``target_mask`` is None when every token after the prompt is a loss target. A chat with several assistant
    turns (arkd_env/assets/formats.py) has user turns between its targets, so it carries one flag per token;
    ``prompt_length`` is then its first target, which is where generation starts.
    """

    input_ids: list[int]
    prompt_length: int
    record_index: int = -1
    target_mask: list[bool] | None = None


@dataclass
class TruncationStats:
    """What tokenization dropped or cut, so a run can report it."""

    total: int = 0
    kept: int = 0
    skipped_long_prompt: int = 0  # prompt alone longer than max_prompt_length: example dropped
    truncated: int = 0  # response (or text) cut to fit max_length
    skipped_empty: int = 0  # text-format records with no tokens
    examples_at_fault: list[int] = field(default_factory=list)  # record indices of the first skipped prompts

    def as_dict(self) -> dict[str, int]:
        values = asdict(self)
        values.pop("examples_at_fault")
        return values


def bos_prefix(tokenizer: Any) -> list[int]:
    """``[bos]`` when the tokenizer has a begin token distinct from its end token, else ``[]``."""
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    return [int(bos)] if bos is not None and bos != eos else []


def pad_token_id(tokenizer: Any) -> int:
    """The id to pad with: the pad token, else the end token (GPT-2 has no pad token)."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither a pad nor an eos token")


def _eos_id(tokenizer: Any) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no eos token; "
                         f"responses must end with one")
    return int(eos)


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of formatted prompts exactly as :func:`tokenize_records` lays them out (with <bos>)."""
    prefix = bos_prefix(tokenizer)
    return [prefix + ids for ids in _encode(tokenizer, list(prompts))]


def tokenize_records(
    records: Sequence[Mapping[str, str]], tokenizer: Any, cfg: DataConfig
) -> tuple[list[TokenizedExample], TruncationStats]:
    """Token ids of every record; prompts over ``cfg.max_prompt_length`` are skipped, sequences over
    ``cfg.max_length`` have their response (kept without <eos>) or text cut; both are counted."""
    if cfg.format == "text":
        examples, stats = _tokenize_text(records, tokenizer, cfg)
    else:
        examples, stats = _tokenize_instructions(records, tokenizer, cfg)
    log_truncation(stats, cfg)
    return examples, stats


def log_truncation(stats: TruncationStats, cfg: DataConfig) -> None:
    """Say how many examples were skipped for a long prompt (a warning) and how many were cut (info)."""
    if stats.skipped_long_prompt:
        logger.warning("%d of %d prompts exceed data.max_prompt_length=%d tokens and were skipped "
                       "(first record indices: %s)", stats.skipped_long_prompt, stats.total,
                       cfg.max_prompt_length, stats.examples_at_fault)
    if stats.truncated:
        logger.info("%d of %d sequences were truncated to data.max_length=%d tokens",
                    stats.truncated, stats.total, cfg.max_length)


def _require(record: Mapping[str, str], key: str, index: int) -> str:
    value = record.get(key)
    if value is None:
        raise ValueError(f"record {index}: missing field {key!r} (fields: {', '.join(record)})")
    return value


def _tokenize_instructions(
    records: Sequence[Mapping[str, str]], tokenizer: Any, cfg: DataConfig
) -> tuple[list[TokenizedExample], TruncationStats]:
    template = _template_name(cfg)
    prompts = [format_prompt(_require(r, "instruction", i), r.get("context") or "", template)
               for i, r in enumerate(records)]
    responses = [_require(r, "response", i) for i, r in enumerate(records)]
    prefix, eos = bos_prefix(tokenizer), _eos_id(tokenizer)
    stats = TruncationStats(total=len(records))
    examples: list[TokenizedExample] = []
    for index, (prompt_ids, response_ids) in enumerate(
        zip(_encode(tokenizer, prompts), _encode(tokenizer, responses), strict=True)
    ):
        prompt = prefix + prompt_ids
        if len(prompt) > cfg.max_prompt_length:
            stats.skipped_long_prompt += 1
            if len(stats.examples_at_fault) < 5:
                stats.examples_at_fault.append(index)
            continue
        target = [*response_ids, eos]
        room = cfg.max_length - len(prompt)  # >= 1 because max_length > max_prompt_length
        if len(target) > room:
            # A cut response keeps no <eos>: the model must not learn to stop where the data was cut.
            target = response_ids[:room]
            stats.truncated += 1
        examples.append(TokenizedExample(prompt + target, len(prompt), index))
    stats.kept = len(examples)
    return examples, stats


def _tokenize_text(
    records: Sequence[Mapping[str, str]], tokenizer: Any, cfg: DataConfig
) -> tuple[list[TokenizedExample], TruncationStats]:
    texts = [_require(r, "text", i) for i, r in enumerate(records)]
    prefix, eos = bos_prefix(tokenizer), _eos_id(tokenizer)
    stats = TruncationStats(total=len(records))
    examples: list[TokenizedExample] = []
    for index, ids in enumerate(_encode(tokenizer, texts)):
        if not ids:
            stats.skipped_empty += 1
            continue
        sequence = [*prefix, *ids, eos]
        if len(sequence) > cfg.max_length:
            sequence = sequence[: cfg.max_length]
            stats.truncated += 1
        # Every token after <bos> is a loss target; the first token has no predecessor to predict it.
        examples.append(TokenizedExample(sequence, len(prefix), index))
    stats.kept = len(examples)
    return examples, stats


# ---------------------------------------------------------------------------------------------
# Splitting and batching

T = TypeVar("T")


def split_train_val(items: Sequence[T], val_size: int, seed: int) -> tuple[list[T], list[T]]:
    """Hold out ``val_size`` items chosen by ``seed``; both parts keep the original order."""
    if val_size < 1 or val_size >= len(items):
        raise ValueError(f"data.val_size={val_size}: must be >= 1 and leave training examples "
                         f"(only {len(items)} examples)")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    held_out = set(order[:val_size])
    train = [item for i, item in enumerate(items) if i not in held_out]
    val = [item for i, item in enumerate(items) if i in held_out]
    return train, val


def split_first(examples: Sequence[TokenizedExample], val_size: int) -> tuple[list[TokenizedExample],
                                                                              list[TokenizedExample]]:
    """Hold out the examples made from the first ``val_size`` records (those of them that survived
    tokenization); the rest train. Both parts keep the original order."""
    train = [e for e in examples if e.record_index >= val_size]
    val = [e for e in examples if e.record_index < val_size]
    if not val or not train:
        raise ValueError(f"data.val_size={val_size} with data.val_split=first: {len(val)} validation and "
                         f"{len(train)} training examples; both must be non-empty")
    return train, val


def _ids(example: TokenizedExample | Sequence[int]) -> list[int]:
    return list(example.input_ids) if isinstance(example, TokenizedExample) else list(example)


def collate(examples: Sequence[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded training batch: input_ids, attention_mask, labels, loss_mask [B, L], prompt_lengths [B].

    ``labels[:, t]`` is ``input_ids[:, t + 1]`` where that token is a response token (incl. <eos>), or a
    target of an example's ``target_mask``, and -100 elsewhere (prompt, padding, the last position, the user
    turns of a multi-turn chat); ``loss_mask = labels != -100``.
    """
    if not examples:
        raise ValueError("collate: empty batch")
    length = max(len(e.input_ids) for e in examples)
    batch = len(examples)
    input_ids = torch.full((batch, length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        ids = torch.tensor(example.input_ids, dtype=torch.long)
        n = len(ids)
        input_ids[row, :n] = ids
        attention_mask[row, :n] = 1
        first_target = max(example.prompt_length, 1)  # token 0 is never predicted
        if first_target < n:
            labels[row, first_target - 1 : n - 1] = ids[first_target:]
        if example.target_mask is not None:
            # labels[t - 1] scores token t, so a token that is not a target must score nothing.
            off = [t - 1 for t, target in enumerate(example.target_mask) if t >= 1 and not target]
            labels[row, off] = IGNORE_INDEX
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "loss_mask": labels != IGNORE_INDEX,
        "prompt_lengths": torch.tensor([e.prompt_length for e in examples], dtype=torch.long),
    }


def collate_prompts(
    examples: Sequence[TokenizedExample | Sequence[int]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Left-padded prompt batch for generation: the prompt part of each example (or the given ids)."""
    if not examples:
        raise ValueError("collate_prompts: empty batch")
    prompts = [_ids(e)[: e.prompt_length] if isinstance(e, TokenizedExample) else _ids(e) for e in examples]
    length = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            input_ids[row, length - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, length - len(prompt):] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# ---------------------------------------------------------------------------------------------
# Everything at once


@dataclass
class DataBundle:
    """Tokenized train/validation examples; ``val_records[i]`` describes ``val[i]`` for generation metrics
    (keys: prompt, reference, and the record's own fields such as task, kind, distribution)."""

    train: list[TokenizedExample]
    val: list[TokenizedExample]
    val_records: list[dict[str, str]]
    stats: TruncationStats
    source: str = ""
    format: str = "instruction"


def _val_record(record: Mapping[str, str], cfg: DataConfig) -> dict[str, str]:
    described = dict(record)
    if cfg.format == "text":
        described.update(prompt="", reference=record["text"])
    else:
        described.update(prompt=format_prompt(record["instruction"], record.get("context") or "",
                                              _template_name(cfg)),
                         reference=record["response"])
    return described


def build_datasets(cfg: Any, tokenizer: Any) -> DataBundle:
    """Load, tokenize and split the data of ``cfg`` (a DataConfig, or an EngineConfig's ``data``)."""
    data_cfg: DataConfig = cfg.data if hasattr(cfg, "data") else cfg
    records = load_records(None, data_cfg)
    if not records:
        raise ValueError(f"data source {data_cfg.source!r}: empty data set (no records)")
    if data_cfg.format in ROW_FORMATS:
        from arkd_env.assets import formats

        examples, stats = formats.tokenize_rows(records, tokenizer, data_cfg, data_cfg.source)
    else:
        examples, stats = tokenize_records(records, tokenizer, data_cfg)
    if not examples:
        raise ValueError(f"data source {data_cfg.source!r}: no usable example out of {stats.total} "
                         f"(prompts over data.max_prompt_length={data_cfg.max_prompt_length}: "
                         f"{stats.skipped_long_prompt}, empty texts: {stats.skipped_empty})")
    if data_cfg.val_size >= len(examples):
        raise ValueError(f"data.val_size={data_cfg.val_size}: needs more than {len(examples)} usable "
                         f"examples from {data_cfg.source!r}; lower it or add data")
    if data_cfg.val_split == "first":
        train, val = split_first(examples, data_cfg.val_size)
    else:
        train, val = split_train_val(examples, data_cfg.val_size, data_cfg.split_seed)
    if data_cfg.format in ROW_FORMATS:
        val_records = [formats.describe_row(records[e.record_index], e, tokenizer, data_cfg) for e in val]
    else:
        val_records = [_val_record(records[e.record_index], data_cfg) for e in val]
    return DataBundle(train, val, val_records, stats, data_cfg.source, data_cfg.format)
