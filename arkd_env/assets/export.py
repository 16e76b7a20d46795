"""A distilled student as a folder that plain ``transformers`` loads and generates from exactly as ARKD does.

ARKD lays sequences out itself (``[<bos>] prompt response <eos>``, :mod:`arkd_env.assets.data`) and formats
prompts with its own template, so a folder holding only the weights and the tokenizer would answer
differently outside ARKD: no ``<bos>`` where the student always saw one, no template, no stopping rule.
:func:`save_student_folder` writes, beside the weights:

- a tokenizer whose ordinary encoding (``tokenizer(text)``) starts with ``<bos>`` whenever ARKD's layout does,
  padding on the left as batched generation from a decoder needs;
- a chat template that renders a user turn in the run's prompt template, when the tokenizer has none, so
  ``pipeline("text-generation")`` on chat messages builds the prompts the student learned from;
- a generation config: greedy, at most the run's ``max_new_tokens``, stopping at ``<eos>``.

The folder is written under a temporary name and renamed into place, replacing any folder of that name (a
crash never leaves half of it). A tokenizer that cannot be made to add ``<bos>`` (a slow one, or a class that
rebuilds its post-processor on load) is saved as it is, with an :class:`~arkd_env.ARKDWarning`.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

from tokenizers import processors
from transformers import AutoTokenizer, GenerationConfig

from arkd_env import ARKDWarning
from arkd_env.assets import models
from arkd_env.assets.data import PROMPT_TEMPLATES, bos_prefix
from arkd_env.atomic import atomic_path

_PROBE_TEXT = "a"


def chat_template_for(template: str, with_bos: bool = True) -> str:
    """A Jinja chat template rendering each user turn as the no-input prompt of ARKD template ``template`` and
    each assistant turn as a response ended by ``<eos>``, after ``<bos>`` if ``with_bos`` (as ARKD's layout has
    it when the tokenizer's begin token differs from its end token); other roles are refused, as ARKD never
    trained on them."""
    before, after = PROMPT_TEMPLATES[template]["no_input"].split("{instruction}")
    user = f"{before!r} + message['content'] + {after!r}"
    return (("{{ bos_token }}" if with_bos else "") + "{% for message in messages %}"
            f"{{% if message['role'] == 'user' %}}{{{{ {user} }}}}"
            "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
            "{% else %}{{ raise_exception('this student knows user and assistant turns only, not '"
            " + message['role']) }}{% endif %}{% endfor %}")


def portable_tokenizer(tokenizer: Any, template: str) -> Any:
    """A copy of ``tokenizer`` that encodes, pads and chats as :func:`save_student_folder` describes."""
    portable = copy.deepcopy(tokenizer)
    prefix = bos_prefix(tokenizer)
    adds_bos = tokenizer(_PROBE_TEXT)["input_ids"][:1] == prefix
    backend = getattr(portable, "backend_tokenizer", None)
    if prefix and not adds_bos and backend is not None:
        bos = portable.bos_token
        with_bos = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                 special_tokens=[(bos, prefix[0])])
        existing = backend.post_processor
        backend.post_processor = with_bos if existing is None else processors.Sequence([existing, with_bos])
    portable.padding_side = "left"
    if getattr(portable, "chat_template", None) is None:
        portable.chat_template = chat_template_for(template, with_bos=bool(prefix))
    return portable


def generation_config_for(tokenizer: Any, max_new_tokens: int) -> GenerationConfig:
    """Greedy decoding of at most ``max_new_tokens``, stopping at the tokenizer's ``<eos>``."""
    return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)


def save_student_folder(model: Any, tokenizer: Any, path: str | Path, *, template: str,
                        max_new_tokens: int) -> Path:
    """Write ``model`` with :func:`portable_tokenizer` and :func:`generation_config_for` into ``path``."""
    path = Path(path)
    with atomic_path(path, folder=True) as tmp:
        models.save_pretrained_safe(model, portable_tokenizer(tokenizer, template), tmp)
        generation_config_for(tokenizer, max_new_tokens).save_pretrained(str(tmp))
        # Some tokenizer classes rebuild their post-processor on load: check what a user will get back.
        reloaded = AutoTokenizer.from_pretrained(str(tmp))
        prefix = bos_prefix(tokenizer)
        if prefix and reloaded(_PROBE_TEXT)["input_ids"][:1] != prefix:
            warnings.warn(f"{path}: the saved {type(reloaded).__name__} does not start its encodings with "
                          f"{tokenizer.bos_token!r} as ARKD's layout does; prepend it when you encode prompts",
                          ARKDWarning, stacklevel=2)
    return path
