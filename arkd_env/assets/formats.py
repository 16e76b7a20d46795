"""Rows in TRL's data set formats -> ARKD's :class:`~arkd_env.assets.data.TokenizedExample` s.

Three row formats are recognised, one per row (:func:`row_format`):

- ``messages``: a list of ``{"role", "content"}`` (TRL's conversational format); the loss is on every
  assistant turn.
- ``prompt_completion``: ``prompt`` + ``completion``, two strings or two message lists (TRL's conversational
  prompt/completion, the completion holding assistant messages only); the loss is on the completion.
- ``instruction``: ARKD's ``instruction`` / ``response`` (``context`` optional); the loss is on the response.

A field whose value is ``None`` counts as absent: when `datasets` reads a file whose rows mix formats, Arrow
gives every row every column and fills the missing ones with ``None``.

Layout and masking follow :mod:`arkd_env.assets.data`: ``[<bos>] prompt response <eos>`` with the loss on the
response. String prompt/completion rows are laid out exactly like instruction records whose formatted prompt
is that string (the prompt is used verbatim, no ARKD template), so the two give identical ids. Conversations
are rendered with the tokenizer's chat template; ``<bos>`` is added only when the rendered text does not
already start with it (templates such as Llama 3's write it themselves), and ``<eos>`` is appended after the
last assistant turn unless that turn already ends with it (ChatML tokenizers whose end token is
``<|im_end|>``), because ARKD's generation stops at ``<eos>``.

Finding the assistant spans: by *incremental rendering*. For assistant turn ``i`` the text from the end of
``render(messages[:i], add_generation_prompt=True)`` to the end of ``render(messages[:i + 1])`` is the turn
as the model must write it: its content and end-of-turn token, without the role header (that belongs to the
generation prompt the model is given). Whitespace the template puts after the end-of-turn token (ChatML's
``\\n``) is left out of the loss, since generation stops at that token. This works with any template whose
renderings of a conversation's prefixes are prefixes of each other, which :func:`_spans` checks (a one-line
error otherwise). ``return_assistant_tokens_mask`` was not used: it needs ``{% generation %}`` markers, which
the chat templates of most published models (Qwen2.5, SmolLM2, Llama) lack, and it maps characters to tokens
through offsets of a single encoding, which only fast tokenizers provide.

Each span is encoded separately and the ids concatenated, as :mod:`arkd_env.assets.data` encodes prompt and
response separately, so the generation prompt is encoded exactly as it is at evaluation time.

A conversation with more than one assistant turn has user turns between its loss targets, which
``TokenizedExample.prompt_length`` alone cannot express: its example carries a per-token ``target_mask``,
which :func:`~arkd_env.assets.data.collate` honours. Every other row gives an example without one, all
tokens after the prompt being targets.

``data.format=auto`` detects each row's format; ``messages`` or ``prompt_completion`` require it of every
row. :func:`~arkd_env.assets.data.build_datasets` reads rows through this module for those three settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from arkd_env.assets import data
from arkd_env.assets.data import TokenizedExample, TruncationStats, bos_prefix, log_truncation
from arkd_env.config import ConfigError, DataConfig

MESSAGES, PROMPT_COMPLETION, INSTRUCTION = "messages", "prompt_completion", "instruction"
FORMATS: tuple[str, ...] = (MESSAGES, PROMPT_COMPLETION, INSTRUCTION)
ROLES: tuple[str, ...] = ("system", "user", "assistant")

# Other TRL formats, named in the error for a row that matches none of ours so the user knows why.
_OTHER_FORMATS: dict[str, str] = {
    "text": "'text' rows are language-modeling data: set data.format=text",
    "chosen": "preference rows (chosen/rejected) are not supported",
}
_MAX_SHOWN = 40  # characters of a value quoted in an error message


# ---------------------------------------------------------------------------------------------
# Format detection and validation


def _label(source: str, index: int) -> str:
    # 1-based like data.py's "row N" labels, so one row is named the same way by both modules.
    return f"{source}: row {index + 1}"


def _fail(source: str, index: int, where: str, problem: str) -> ConfigError:
    return ConfigError(f"{_label(source, index)}: field {where}: {problem}")


def _shown(value: Any) -> str:
    """``repr`` of a value cut to a few characters; repr also escapes newlines, keeping errors on one line."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _present(row: Mapping[str, Any], key: str) -> bool:
    return row.get(key) is not None


def _instruction_keys(cfg: DataConfig | None) -> tuple[str, str, str]:
    if cfg is None:
        return "instruction", "response", "context"
    return cfg.instruction_field, cfg.response_field, cfg.context_field


def row_format(row: Mapping[str, Any], index: int, source: str, cfg: DataConfig | None = None) -> str:
    """The format of ``row`` (one of :data:`FORMATS`), after checking the row holds it completely.

    ``index`` is the row's 0-based position (errors say ``row index + 1``); ``source`` names the file in
    errors; ``cfg`` gives the instruction format's field names (ARKD's defaults when None). A row matching
    no format, or more than one, or one incompletely, raises a one-line :class:`ConfigError` naming
    ``source``, the row and the field.
    """
    if not isinstance(row, Mapping):
        raise ConfigError(f"{_label(source, index)}: expected an object, got {type(row).__name__}")
    instruction, response, _ = _instruction_keys(cfg)
    found = {
        MESSAGES: [k for k in ("messages",) if _present(row, k)],
        PROMPT_COMPLETION: [k for k in ("prompt", "completion") if _present(row, k)],
        INSTRUCTION: [k for k in dict.fromkeys((instruction, response)) if _present(row, k)],
    }
    matched = [fmt for fmt, keys in found.items() if keys]
    if len(matched) > 1:
        fields = " and ".join(repr(found[fmt][0]) for fmt in matched)
        raise ConfigError(f"{_label(source, index)}: fields {fields}: two formats in one row; keep one of "
                          f"'messages', 'prompt'/'completion' or {instruction!r}/{response!r}")
    if not matched:
        hints = [hint for key, hint in _OTHER_FORMATS.items() if _present(row, key)]
        present = ", ".join(repr(k) for k in row if _present(row, k)) or "none"
        raise ConfigError(f"{_label(source, index)}: no known format: expected field 'messages', 'prompt' and "
                          f"'completion', or {instruction!r} and {response!r} (found: {present})"
                          + (f"; {hints[0]}" if hints else ""))
    fmt = matched[0]
    check_row(row, fmt, index, source, cfg)
    return fmt


def check_row(row: Mapping[str, Any], fmt: str, index: int, source: str, cfg: DataConfig | None = None) -> None:
    """Raise a one-line :class:`ConfigError` unless ``row`` is a complete, well-typed row of ``fmt``."""
    if fmt == MESSAGES:
        messages = _check_messages(row.get("messages"), "'messages'", index, source)
        if not any(m["role"] == "assistant" for m in messages):
            raise _fail(source, index, "'messages'", "no assistant turn, so nothing to learn")
    elif fmt == PROMPT_COMPLETION:
        _check_prompt_completion(row, index, source)
    elif fmt == INSTRUCTION:
        # Values are not type-checked: data.py turns any non-null value into a string, and so do we.
        for key in _instruction_keys(cfg)[:2]:
            if not _present(row, key):
                raise _fail(source, index, repr(key), "missing (an instruction row needs it)")
    else:
        raise ConfigError(f"row format {fmt!r}: must be one of {', '.join(FORMATS)}")


def format_of(row: Mapping[str, Any], index: int, source: str, cfg: DataConfig) -> str:
    """The format ``row`` is read in: detected when ``cfg.format`` is 'auto', else ``cfg.format`` (which
    :func:`tokenize_row` checks the row against)."""
    return row_format(row, index, source, cfg) if cfg.format == "auto" else cfg.format


def reference_text(row: Mapping[str, Any], fmt: str, cfg: DataConfig | None = None) -> str:
    """What the model should answer to the row's prompt: the first target turn, or the response."""
    if fmt == INSTRUCTION:
        return str(row[_instruction_keys(cfg)[1]])
    if fmt == PROMPT_COMPLETION:
        completion = row["completion"]
        return completion if isinstance(completion, str) else str(completion[0]["content"])
    return next(str(m["content"]) for m in row["messages"] if m["role"] == "assistant")


def describe_row(row: Mapping[str, Any], example: TokenizedExample, tokenizer: Any, cfg: DataConfig) -> dict[str, Any]:
    """The validation record of a row (:class:`~arkd_env.assets.data.DataBundle`): its string fields, the
    prompt the student is given as text, and the reference its answer is scored against (ROUGE-L)."""
    fmt = format_of(row, example.record_index, cfg.source, cfg)
    described: dict[str, Any] = {k: v for k, v in row.items() if isinstance(v, str)}
    described.update(prompt=tokenizer.decode(example.input_ids[: example.prompt_length]),
                     reference=reference_text(row, fmt, cfg))
    return described


def _check_messages(value: Any, where: str, index: int, source: str) -> list[Mapping[str, Any]]:
    if value is None:
        raise _fail(source, index, where, "missing")
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise _fail(source, index, where, f"expected a list of messages, got {type(value).__name__}")
    if not value:
        raise _fail(source, index, where, "empty list of messages")
    for i, message in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(message, Mapping):
            raise _fail(source, index, at, f"expected a {{'role', 'content'}} object, got {type(message).__name__}")
        for key in ("role", "content"):
            if message.get(key) is None:
                raise _fail(source, index, at, f"missing {key!r}")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise _fail(source, index, f"{at}['role']", f"unknown role {_shown(role)} (known: {', '.join(ROLES)})")
        if not isinstance(content, str):
            # Multimodal content lists ([{"type": "text", ...}]) land here too: only text is supported.
            raise _fail(source, index, f"{at}['content']", f"expected a string, got {type(content).__name__}")
    return list(value)


def _check_prompt_completion(row: Mapping[str, Any], index: int, source: str) -> None:
    for key in ("prompt", "completion"):
        if not _present(row, key):
            raise _fail(source, index, repr(key), "missing (a prompt/completion row needs both)")
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        return
    if isinstance(prompt, str) or isinstance(completion, str):
        text_key = "prompt" if isinstance(prompt, str) else "completion"
        other_key = "completion" if text_key == "prompt" else "prompt"
        other = row[other_key]
        if isinstance(other, Sequence) and not isinstance(other, bytes):
            raise _fail(source, index, repr(other_key), f"a list of messages while {text_key!r} is a string; "
                        "give both as strings or both as message lists")
        raise _fail(source, index, repr(other_key), f"expected a string, got {type(other).__name__}")
    _check_messages(prompt, "'prompt'", index, source)
    for i, message in enumerate(_check_messages(completion, "'completion'", index, source)):
        if message["role"] != "assistant":
            # The whole completion is trained on, so it may only hold what the model itself says.
            raise _fail(source, index, f"'completion'[{i}]['role']",
                        f"{_shown(message['role'])}: a completion holds assistant messages only")


# ---------------------------------------------------------------------------------------------
# Tokenization


def tokenize_row(
    row: Mapping[str, Any],
    fmt: str,
    tokenizer: Any,
    cfg: DataConfig,
    index: int,
    source: str,
    stats: TruncationStats | None = None,
) -> TokenizedExample | None:
    """The example of one row of format ``fmt`` (from :func:`row_format`), or None when its prompt is over
    ``cfg.max_prompt_length`` tokens (skipped). Sequences over ``cfg.max_length`` are cut, losing ``<eos>``.

    Skips and cuts are counted in ``stats`` as :func:`~arkd_env.assets.data.tokenize_records` counts them;
    ``record_index`` is ``index``. Multi-turn conversations give an example with a ``target_mask``.
    """
    check_row(row, fmt, index, source, cfg)
    stats = TruncationStats() if stats is None else stats
    stats.total += 1
    if fmt == INSTRUCTION:
        example = _instruction_example(row, tokenizer, cfg, index, source, stats)
    elif fmt == PROMPT_COMPLETION and isinstance(row["prompt"], str):
        prompt_ids, completion_ids = data._encode(tokenizer, [row["prompt"], row["completion"]])
        example = _assemble([(prompt_ids, False), (completion_ids, True)], tokenizer, cfg, index, stats,
                            eos_always=True)
    else:
        if fmt == MESSAGES:
            messages, first_target = list(row["messages"]), 0
        else:
            messages, first_target = [*row["prompt"], *row["completion"]], len(row["prompt"])
        pieces = _spans(messages, first_target, tokenizer, index, source, fmt)
        encoded = data._encode(tokenizer, [text for text, _ in pieces])
        example = _assemble([(ids, target) for ids, (_, target) in zip(encoded, pieces, strict=True)],
                            tokenizer, cfg, index, stats, eos_always=False)
    if example is not None:
        stats.kept += 1
    return example


def tokenize_rows(
    rows: Sequence[Mapping[str, Any]], tokenizer: Any, cfg: DataConfig, source: str
) -> tuple[list[TokenizedExample], TruncationStats]:
    """Tokenize every row in its format (:func:`format_of`), logging skips and cuts as
    :func:`data.tokenize_records` does."""
    stats = TruncationStats()
    examples: list[TokenizedExample] = []
    for index, row in enumerate(rows):
        example = tokenize_row(row, format_of(row, index, source, cfg), tokenizer, cfg, index, source, stats)
        if example is not None:
            examples.append(example)
    log_truncation(stats, cfg)
    return examples, stats


def _instruction_example(
    row: Mapping[str, Any], tokenizer: Any, cfg: DataConfig, index: int, source: str, stats: TruncationStats
) -> TokenizedExample | None:
    """ARKD's own path, called rather than re-implemented so instruction rows cannot drift from it."""
    instruction, response, context = _instruction_keys(cfg)
    value = row.get(context)
    record = {"instruction": str(row[instruction]), "context": "" if value is None else str(value),
              "response": str(row[response])}
    examples, part = data._tokenize_instructions([record], tokenizer, cfg)
    stats.skipped_long_prompt += part.skipped_long_prompt
    stats.truncated += part.truncated
    if part.skipped_long_prompt:
        _note_skip(stats, index)
    if not examples:
        return None
    examples[0].record_index = index
    return examples[0]


def _note_skip(stats: TruncationStats, index: int) -> None:
    if len(stats.examples_at_fault) < 5:  # data.py keeps the first five
        stats.examples_at_fault.append(index)


def _assemble(
    pieces: Sequence[tuple[list[int], bool]],
    tokenizer: Any,
    cfg: DataConfig,
    index: int,
    stats: TruncationStats,
    eos_always: bool,
) -> TokenizedExample | None:
    """Lay out encoded ``(ids, is_target)`` pieces, the last one a target, as data.py lays out prompt and
    response.

    ``[<bos>]`` first unless the ids already start with it; ``<eos>`` after the last target (always, as
    data.py does, when ``eos_always``, else only if the target does not end with it); the prompt (tokens
    before the first target) over ``max_prompt_length`` skips the row; the whole cut at ``max_length``,
    which for one prompt and one response is exactly data.py's cut of the response (and drops ``<eos>``).
    """
    ids: list[int] = []
    mask: list[bool] = []
    for piece, target in pieces:
        ids += piece
        mask += [target] * len(piece)
    eos = data._eos_id(tokenizer)
    answer = pieces[-1][0]  # the pieces end with a target: text after the last answer is never trained on
    if eos_always or not answer or answer[-1] != eos:
        ids.append(eos)
        mask.append(True)
    prefix = bos_prefix(tokenizer)
    if prefix and ids[: len(prefix)] != prefix:
        ids, mask = prefix + ids, [False] * len(prefix) + mask
    prompt_length = mask.index(True)
    if prompt_length > cfg.max_prompt_length:
        stats.skipped_long_prompt += 1
        _note_skip(stats, index)
        return None
    if len(ids) > cfg.max_length:
        ids, mask = ids[: cfg.max_length], mask[: cfg.max_length]
        stats.truncated += 1
    if all(mask[prompt_length:]):
        return TokenizedExample(ids, prompt_length, index)
    return TokenizedExample(ids, prompt_length, index, mask)


def _tokenizer_name(tokenizer: Any) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def _render(
    tokenizer: Any, messages: list[Mapping[str, Any]], generation: bool, index: int, source: str, fmt: str
) -> str:
    try:
        text = tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                             add_generation_prompt=generation)
    except Exception as err:  # templates raise TemplateError, ValueError, ... (e.g. "roles must alternate")
        raise ConfigError(f"{_label(source, index)}: field {_fmt_field(fmt)}: the chat template of tokenizer "
                          f"{_tokenizer_name(tokenizer)!r} failed ({data._first_line(err)})") from None
    if not isinstance(text, str):
        raise ConfigError(f"tokenizer {_tokenizer_name(tokenizer)!r}: apply_chat_template(tokenize=False) "
                          f"returned {type(text).__name__}, not a string")
    return text


def _fmt_field(fmt: str) -> str:
    return "'messages'" if fmt == MESSAGES else "'prompt'/'completion'"


def _spans(
    messages: list[Mapping[str, Any]], first_target: int, tokenizer: Any, index: int, source: str, fmt: str
) -> list[tuple[str, bool]]:
    """The rendered conversation as ``(text, is_target)`` pieces, up to the end of its last target turn.

    Targets are the assistant turns from ``first_target`` on, found by incremental rendering (module
    docstring). The rendering of each prefix must extend the previous one; a template that rewrites earlier
    turns (a message count in a header, reasoning stripped from past turns) would make the spans wrong, so
    it raises a one-line error instead.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError(f"{_label(source, index)}: field {_fmt_field(fmt)}: tokenizer "
                          f"{_tokenizer_name(tokenizer)!r} has no chat template; set its chat_template, or "
                          f"write the rows as prompt/completion strings")
    pieces: list[tuple[str, bool]] = []
    done = ""  # rendered text up to the end of the previous assistant turn
    cursor = 0  # characters of ``done`` already in ``pieces``
    for turn in range(first_target, len(messages)):
        if messages[turn]["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:turn], True, index, source, fmt)
        after = _render(tokenizer, messages[: turn + 1], False, index, source, fmt)
        if not before.startswith(done) or not after.startswith(before):
            raise ConfigError(f"{_label(source, index)}: field {_fmt_field(fmt)}[{turn}]: the chat template of "
                              f"tokenizer {_tokenizer_name(tokenizer)!r} re-renders earlier turns, so the "
                              f"assistant turns cannot be located; write the rows as prompt/completion strings")
        answer = after[len(before):].rstrip()
        pieces.append((before[cursor:], False))
        pieces.append((answer, True))
        done, cursor = after, len(before) + len(answer)
    return pieces


# ---------------------------------------------------------------------------------------------
# Loss targets


def target_mask(example: TokenizedExample) -> list[bool]:
    """Per token, whether it is a loss target: the example's own ``target_mask``, else every token after
    the prompt (token 0 never, as :func:`data.collate` has nothing to predict it from)."""
    if example.target_mask is not None:
        return list(example.target_mask)
    first = max(example.prompt_length, 1)
    return [t >= first for t in range(len(example.input_ids))]
