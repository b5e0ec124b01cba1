"""Model inspection from headers and configs: real checkpoints, real GGUF, every bad input."""

from __future__ import annotations

import json
import shutil
import struct
import sys

import pytest

from engine.errors import QuantDeskError
from engine.inspect import cached_models, estimate_parameters, inspect_model, read_safetensors_header
from tests.fixtures.inspect import TINY_GGUF, tiny_gguf_parameters

SMOLLM2_PARAMS = 134_515_008


def _copy_small_files(src, dest):
    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and item.suffix != ".safetensors" and not item.name.startswith("."):
            shutil.copy2(item, dest / item.name)
    return dest


def test_smollm2_checkpoint(smollm2_dir):
    info = inspect_model(smollm2_dir)
    assert info.kind == "hf"
    assert info.parameters == SMOLLM2_PARAMS and not info.parameters_estimated
    assert info.architecture == "LlamaForCausalLM" and info.dtype == "bf16"
    assert info.bytes_on_disk == (smollm2_dir / "model.safetensors").stat().st_size
    assert (info.context_length, info.layers, info.attention_heads, info.kv_heads, info.head_dim) == (
        8192, 30, 9, 3, 64)
    assert info.has_tokenizer and info.has_chat_template and info.gguf_convertible
    assert not info.pickle_only and info.quantized is None and info.warnings == []
    assert info.weight_files == ["model.safetensors"]


def test_inspection_never_loads_torch(smollm2_dir):
    import subprocess

    code = ("import sys; from engine.inspect import inspect_model\n"
            f"i = inspect_model({str(smollm2_dir)!r}); print(i.parameters, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(SMOLLM2_PARAMS), "False"]


def test_config_estimate_is_exact_for_llama_models(smollm2_dir, tiny_dir):
    for folder in (smollm2_dir, tiny_dir):
        config = json.loads((folder / "config.json").read_text())
        assert estimate_parameters(config) == inspect_model(folder).parameters


_SMALL = {"vocab_size": 1000, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
          "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}
_MOE = {"num_experts_per_tok": 2, "moe_intermediate_size": 32}
_MLA = {"n_routed_experts": 4, **_MOE, "first_k_dense_replace": 1, "n_shared_experts": 1, "kv_lora_rank": 16,
        "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16}
# The architectures hobbyists quantize most; the estimate also matches OLMo2, Granite, StableLM,
# StarCoder2, GPT-NeoX, Phi and DeepSeek-V2 (checked once; left out here to keep the suite fast).
_ARCHS = {
    "llama": {}, "mistral": {"sliding_window": 128}, "qwen2": {}, "qwen3": {"head_dim": 32},
    "gemma2": {"head_dim": 16}, "gemma3_text": {"head_dim": 16},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {"num_experts": 4, **_MOE, "shared_expert_intermediate_size": 48},
    "phi3": {"pad_token_id": 0, "eos_token_id": 0},
    "deepseek_v3": {**_MLA, "q_lora_rank": 24, "n_group": 1, "topk_group": 1},
}


def test_config_estimate_matches_transformers_for_many_architectures():
    """Build each architecture on the meta device (no memory, no weights) and compare counts."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    wrong = {}
    for model_type, extra in _ARCHS.items():
        config = AutoConfig.for_model(model_type, **{**_SMALL, **extra})
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        real = sum(p.numel() for p in model.parameters())
        estimated = estimate_parameters(config.to_dict())
        if estimated != real:
            wrong[model_type] = (estimated, real)
    gpt2 = AutoConfig.for_model("gpt2", vocab_size=1000, n_embd=64, n_layer=3, n_head=4, n_positions=512)
    with torch.device("meta"):
        real = sum(p.numel() for p in AutoModelForCausalLM.from_config(gpt2).parameters())
    if estimate_parameters(gpt2.to_dict()) != real:
        wrong["gpt2"] = (estimate_parameters(gpt2.to_dict()), real)
    assert wrong == {}


def test_bare_config_and_config_only_folder(smollm2_dir, tmp_path):
    bare = inspect_model(smollm2_dir / "config.json")
    assert bare.kind == "config" and bare.parameters == SMOLLM2_PARAMS and bare.parameters_estimated
    only = tmp_path / "planned"
    only.mkdir()
    shutil.copy2(smollm2_dir / "config.json", only / "config.json")
    info = inspect_model(only)
    assert info.kind == "config" and info.parameters == SMOLLM2_PARAMS
    assert not info.has_tokenizer and not info.has_chat_template and info.bytes_on_disk == 0


@pytest.mark.parametrize(
    ("name", "params", "arch"),
    [("llama-2-7b", 6_738_415_616, "LlamaForCausalLM"), ("llama-3-70b", 70_553_706_496, "LlamaForCausalLM"),
     ("mistral-7b", 7_241_732_096, "MistralForCausalLM"), ("mixtral-8x7b", 46_702_792_704, "MixtralForCausalLM")],
)
def test_published_parameter_counts_from_configs(model_config, name, params, arch):
    info = inspect_model(model_config(name))
    assert info.parameters == params and info.architecture == arch and info.gguf_convertible


def test_moe_experts(model_config):
    info = inspect_model(model_config("mixtral-8x7b"))
    assert (info.experts, info.experts_per_token) == (8, 2)
    assert info.sliding_window is None and info.sliding_window_layers == 0


def test_sliding_window_layers(model_config, tmp_path):
    mistral = inspect_model(model_config("mistral-7b"))
    assert (mistral.sliding_window, mistral.sliding_window_layers, mistral.full_attention_layers) == (4096, 32, 0)
    gemma = inspect_model(model_config("gemma-2-9b"))
    assert (gemma.sliding_window, gemma.sliding_window_layers, gemma.head_dim) == (4096, 21, 256)
    # Qwen2 ships sliding_window but switches it off.
    cfg = json.loads(model_config("mistral-7b").read_text())
    (tmp_path / "qwen.json").write_text(json.dumps({**cfg, "model_type": "qwen2", "use_sliding_window": False}))
    assert inspect_model(tmp_path / "qwen.json").sliding_window_layers == 0
    # transformers' per-layer list wins.
    types = ["sliding_attention", "sliding_attention", "full_attention"] * 10 + ["sliding_attention"] * 2
    (tmp_path / "types.json").write_text(json.dumps({**cfg, "layer_types": types}))
    assert inspect_model(tmp_path / "types.json").sliding_window_layers == 22


def test_sharded_safetensors(sharded_dir, tiny_dir):
    info = inspect_model(sharded_dir)
    assert info.kind == "hf" and info.parameters == inspect_model(tiny_dir).parameters
    assert info.weight_files == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert info.bytes_on_disk == sum((sharded_dir / f).stat().st_size for f in info.weight_files)


def test_missing_shard_is_named(sharded_dir, tmp_path):
    broken = _copy_small_files(sharded_dir, tmp_path / "broken")
    shutil.copy2(sharded_dir / "model-00001-of-00002.safetensors", broken)
    with pytest.raises(QuantDeskError, match=r"missing 1 of 2 weight shards \(model-00002-of-00002"):
        inspect_model(broken)


def test_gguf_file(tiny_gguf):
    s = TINY_GGUF
    info = inspect_model(tiny_gguf)
    assert info.kind == "gguf" and info.architecture == "llama" and info.dtype == "F16"
    assert info.parameters == tiny_gguf_parameters()
    assert (info.context_length, info.layers, info.attention_heads, info.kv_heads, info.head_dim) == (
        s["context"], s["layers"], s["heads"], s["kv_heads"], s["hidden"] // s["heads"])
    assert info.vocab_size == s["vocab"] and not info.tied_embeddings
    assert info.has_tokenizer and info.has_chat_template and info.quantized is None
    assert info.bytes_on_disk == tiny_gguf.stat().st_size


def test_gguf_sliding_window_and_no_template(tiny_gguf_swa, tmp_path):
    info = inspect_model(tiny_gguf_swa)
    assert info.sliding_window == 256 and info.sliding_window_layers == TINY_GGUF["layers"]
    assert not info.has_chat_template
    # A folder holding one GGUF is that GGUF.
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy2(tiny_gguf_swa, folder / "m.gguf")
    assert inspect_model(folder).kind == "gguf"


def test_no_chat_template_is_reported(tiny_nochat_dir):
    info = inspect_model(tiny_nochat_dir)
    assert not info.has_chat_template and any("chat template" in w for w in info.warnings)


def test_chat_template_in_tokenizer_config(tiny_nochat_dir, tmp_path):
    folder = _copy_small_files(tiny_nochat_dir, tmp_path / "m")
    (folder / "config.json").write_text((tiny_nochat_dir / "config.json").read_text())
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tok, "chat_template": "{{ messages }}"}))
    assert inspect_model(folder).has_chat_template


def test_pickle_only_checkpoint(tiny_dir, tmp_path):
    folder = _copy_small_files(tiny_dir, tmp_path / "pickled")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02not really loaded")
    info = inspect_model(folder)
    assert info.pickle_only and info.parameters_estimated
    assert info.parameters == inspect_model(tiny_dir).parameters
    assert info.weight_files == ["pytorch_model.bin"]


def test_already_quantized_checkpoint(tiny_dir, tmp_path):
    folder = _copy_small_files(tiny_dir, tmp_path / "q")
    shutil.copy2(tiny_dir / "model.safetensors", folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (folder / "config.json").write_text(json.dumps(cfg))
    info = inspect_model(folder)
    assert info.quantized == "bnb-nf4" and info.parameters_estimated


def test_unsupported_architecture_is_not_convertible(model_config, tmp_path):
    cfg = json.loads(model_config("llama-2-7b").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "architectures": ["NoSuchModelForCausalLM"]}))
    assert not inspect_model(tmp_path).gguf_convertible


def test_safetensors_header_only(tiny_dir):
    header = read_safetensors_header(tiny_dir / "model.safetensors")
    assert "model.embed_tokens.weight" in header


# ----------------------------------------------------------------------------- bad input


def _bad_inputs(root, tiny_dir):
    """Every mistake a user can make, as (path, message pattern)."""
    cases = []
    cases.append((root / "nowhere", "does not exist"))
    pictures = root / "pictures"
    pictures.mkdir()
    (pictures / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (pictures / "dog.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 64)
    cases.append((pictures, "holds no model"))
    noconfig = root / "noconfig"
    noconfig.mkdir()
    shutil.copy2(tiny_dir / "model.safetensors", noconfig)
    cases.append((noconfig, "no config.json"))
    notjson = root / "notjson"
    notjson.mkdir()
    (notjson / "config.json").write_text('{"architectures": ["LlamaForCausalLM"],')
    cases.append((notjson, "not valid JSON"))
    array = root / "array"
    array.mkdir()
    (array / "config.json").write_text("[1, 2]")
    cases.append((array, "expected a JSON object"))
    nosizes = root / "nosizes"
    nosizes.mkdir()
    (nosizes / "config.json").write_text('{"model_type": "llama"}')
    cases.append((nosizes, "lacks the model's sizes"))
    truncated = _copy_small_files(tiny_dir, root / "truncated")
    data = (tiny_dir / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[:200])
    cases.append((truncated, "truncated safetensors header"))
    short = _copy_small_files(tiny_dir, root / "short")
    (short / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases.append((short, "shorter than its header says"))
    tiny_file = _copy_small_files(tiny_dir, root / "tinyfile")
    (tiny_file / "model.safetensors").write_bytes(b"\x01\x02")
    cases.append((tiny_file, "truncated"))
    garbage = _copy_small_files(tiny_dir, root / "garbage")
    (garbage / "model.safetensors").write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\0" * 32)
    cases.append((garbage, "header is not JSON"))
    fake_gguf = root / "fake.gguf"
    fake_gguf.write_text("this is not a gguf file at all")
    cases.append((fake_gguf, "is not a GGUF file"))
    cut_gguf = root / "cut.gguf"
    cut_gguf.write_bytes(b"GGUF" + struct.pack("<I", 3) + b"\xff" * 10)
    cases.append((cut_gguf, "damaged or truncated GGUF"))
    other = root / "notes.txt"
    other.write_text("hello")
    cases.append((other, "not a model QuantDesk can read"))
    return cases


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, tiny_dir):
    return _bad_inputs(tmp_path_factory.mktemp("bad"), tiny_dir)


def test_every_bad_input_is_one_clear_sentence(bad_inputs):
    assert len(bad_inputs) >= 12
    for path, pattern in bad_inputs:
        with pytest.raises(QuantDeskError, match=pattern) as err:
            inspect_model(path)
        assert "\n" not in str(err.value), str(err.value)


def test_cached_models_in_a_hugging_face_cache(tmp_path, tiny_dir, tiny_gguf):
    cache = tmp_path / "hub"
    snap = cache / "models--org--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snap / name).symlink_to(tiny_dir / name)
    (cache / "models--org--tiny" / "refs").mkdir()
    (cache / "models--org--tiny" / "refs" / "main").write_text("abc123")
    gguf_snap = cache / "models--org--tiny-GGUF" / "snapshots" / "def456"
    gguf_snap.mkdir(parents=True)
    (gguf_snap / "tiny-f16.gguf").symlink_to(tiny_gguf)
    (cache / "models--org--half-downloaded" / "snapshots" / "0").mkdir(parents=True)
    (cache / "datasets--org--data").mkdir()
    found = cached_models(cache)
    assert found == [("org/tiny", snap), ("org/tiny-GGUF/tiny-f16.gguf", gguf_snap / "tiny-f16.gguf")]
    assert inspect_model(found[0][1]).parameters == inspect_model(tiny_dir).parameters
    assert cached_models(tmp_path / "no-cache-here") == []


def test_gguf_header_agrees_with_ggufs_own_reader(tiny_gguf):
    from gguf import GGUFReader

    from engine.gguf_header import read_gguf_header

    ours, theirs = read_gguf_header(tiny_gguf), GGUFReader(tiny_gguf)
    assert [(t.name, list(t.shape), t.n_elements) for t in ours.tensors] == [
        (t.name, [int(d) for d in t.shape], int(t.n_elements)) for t in theirs.tensors]
    for key, fld in theirs.fields.items():
        if key.startswith("GGUF."):
            continue
        assert ours.fields[key] == fld.contents(), key


def test_real_quantized_gguf():
    from engine.demo import smollm2_gguf_path
    from engine.gguf_header import LongArray, read_gguf_header

    # The 49k-token vocabulary and its merges are counted, not decoded.
    fields = read_gguf_header(smollm2_gguf_path()).fields
    assert fields["tokenizer.ggml.tokens"] == LongArray(49152)
    assert isinstance(fields["tokenizer.ggml.merges"], LongArray)
    info = inspect_model(smollm2_gguf_path())  # SmolLM2-135M-Instruct as shipped: Q4_1
    assert info.kind == "gguf" and info.architecture == "llama" and info.parameters == SMOLLM2_PARAMS
    assert info.quantized == "Q4_1" and info.dtype == "Q4_1"
    assert (info.context_length, info.layers, info.kv_heads, info.head_dim) == (8192, 30, 3, 64)
    assert info.has_tokenizer and info.has_chat_template and info.tied_embeddings


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("hub/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/0123abcd", "SmolLM2-135M-Instruct"),
        ("models/smollm2", "smollm2"),
        ("models/smollm2/config.json", "smollm2"),
        ("out/foo-F16.gguf", "foo"),
        ("out/foo.Q4_K_M.gguf", "foo"),
        ("out/foo-bar.gguf", "foo-bar"),
    ],
)
def test_outputs_are_named_after_the_model_not_a_cache_hash(tmp_path, path, name):
    from engine.inspect import model_name

    target = tmp_path / path
    if target.suffix:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
    else:
        target.mkdir(parents=True)
    assert model_name(target) == name
