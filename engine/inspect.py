"""What a model is, read without loading it: a Hugging Face folder, a bare config.json or a GGUF file.

Public API:

- ``inspect_model(path) -> ModelInfo``: raises QuantDeskError with one sentence for bad input
- ``estimate_parameters(config) -> int``: parameter count from a config.json dict alone
- ``read_safetensors_header(path) -> dict``: the JSON header of one .safetensors file
- ``cached_models() -> list[tuple[str, Path]]``: models already in the Hugging Face cache

Safetensors files are read through their 8-byte length and JSON header only, never
the weights, so inspecting a 70B checkpoint takes milliseconds. A folder with only
a config.json (or the file itself) is inspected from the config, so a user can
plan before downloading. GGUF metadata comes from ``engine.gguf_header``, which
walks the header without decoding the tokenizer's long arrays (``gguf.GGUFReader``
decodes them all and takes seconds; the tests check both agree).
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError
from engine.peek import open_regular, read_head, refuse_special

GGUF_MAGIC = b"GGUF"
_MAX_HEADER = 100_000_000  # the safetensors library refuses longer headers too

# safetensors dtype -> (short name, bytes per element)
_ST_DTYPES: dict[str, tuple[str, float]] = {
    "F64": ("fp64", 8), "F32": ("fp32", 4), "F16": ("fp16", 2), "BF16": ("bf16", 2),
    "F8_E4M3": ("fp8_e4m3", 1), "F8_E5M2": ("fp8_e5m2", 1), "F8_E8M0": ("fp8_e8m0", 1),
    "F4": ("fp4", 0.5), "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2),
    "I8": ("int8", 1), "U8": ("uint8", 1), "U16": ("uint16", 2), "U32": ("uint32", 4),
    "U64": ("uint64", 8), "BOOL": ("bool", 1),
}
_CONFIG_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}
# Classic (non-gated) MLP: two matrices instead of three.
_PLAIN_MLP = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "starcoder", "starcoder2",
              "gpt_bigcode", "codegen", "mpt", "bert", "roberta"}
_LAYERNORM_BIAS = {"stablelm"}  # gated MLP, but LayerNorms with a bias
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_MAX_CONFIG = 16 * 1024**2  # the largest real config.json is a few hundred kB
_MAX_INDEX = 64 * 1024**2  # a weight map of a few hundred thousand tensors
_MAX_DIM = 2**31  # no real size, layer count or vocabulary is larger


@dataclass
class ModelInfo:
    kind: str  # "hf" | "config" | "gguf"
    path: str
    architecture: str | None
    model_type: str | None
    parameters: int
    parameters_estimated: bool  # True when counted from the config, not the weights
    dtype: str | None
    bytes_on_disk: int
    context_length: int | None
    layers: int | None
    hidden_size: int | None
    intermediate_size: int | None
    vocab_size: int | None
    attention_heads: int | None
    kv_heads: int | None
    head_dim: int | None
    sliding_window: int | None = None
    sliding_window_layers: int = 0
    experts: int | None = None
    experts_per_token: int | None = None
    tied_embeddings: bool = False
    has_tokenizer: bool = False
    has_chat_template: bool = False
    gguf_convertible: bool = False
    pickle_only: bool = False
    quantized: str | None = None  # quantization method or GGUF file type, None for full precision
    weight_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def full_attention_layers(self) -> int:
        return max(0, (self.layers or 0) - self.sliding_window_layers)

    @property
    def name(self) -> str:
        p = Path(self.path)
        if self.kind == "config" and p.name == "config.json":
            return p.parent.name or str(p)
        return p.stem if p.is_file() else p.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- safetensors


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file, checked against the file; QuantDeskError when it is damaged.

    The header is untrusted: its length is capped (as the safetensors library does), its JSON
    must be the flat shape safetensors writes (so nesting is bounded), and every tensor's
    offsets must lie inside the file.
    """
    try:
        with open_regular(path) as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            head = fh.read(8)
            if len(head) < 8:
                raise QuantDeskError(f"{path} is truncated (no safetensors header); download it again.")
            (length,) = struct.unpack("<Q", head)
            if length > _MAX_HEADER:
                raise QuantDeskError(f"{path} is not a valid safetensors file (its header claims {length} bytes); "
                                     "download it again.")
            if length > size - 8:
                raise QuantDeskError(
                    f"{path} has a truncated safetensors header (the download is incomplete?); download it again."
                )
            raw = fh.read(length)
    except OSError as err:
        raise QuantDeskError(f"Cannot read {path}: {err.strerror or err}.") from None
    return check_safetensors_header(raw, size - 8 - length, path)


def check_safetensors_header(raw: bytes, data_size: int, path: Path) -> dict[str, Any]:
    """Parse and check a safetensors JSON header whose data section holds ``data_size`` bytes."""
    invalid = QuantDeskError(f"{path} is not a valid safetensors file (its header is damaged); download it again.")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise QuantDeskError(f"{path} is not a valid safetensors file (its header is not JSON); download it again.") from None
    if not isinstance(header, dict):
        raise invalid
    for name, tensor in header.items():
        if name == "__metadata__":
            if not isinstance(tensor, dict) or not all(isinstance(v, str) for v in tensor.values()):
                raise invalid
            continue
        if not isinstance(tensor, dict) or not isinstance(tensor.get("dtype"), str):
            raise invalid
        shape, offsets = tensor.get("shape"), tensor.get("data_offsets")
        if not _ints(shape, None) or not _ints(offsets, 2):
            raise invalid
        start, end = offsets
        if start > end:
            raise invalid
        if end > data_size:
            raise QuantDeskError(
                f"{path} is shorter than its header says (the download is incomplete?); download it again."
            )
        width = _ST_DTYPES.get(tensor["dtype"], ("", 0))[1]
        if width >= 1:
            numel = 1
            for dim in shape:
                numel *= dim
            if numel * width != end - start:
                raise invalid
    return header


def _ints(value: Any, length: int | None) -> bool:
    """A JSON list of non-negative integers (of ``length`` items when given, at most 8 otherwise)."""
    return (isinstance(value, list) and (len(value) == length if length is not None else len(value) <= 8)
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 for v in value))


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({folder / name for name in _index_shards(index)})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise QuantDeskError(
                f"{folder} is missing {len(missing)} of {len(files)} weight shards ({missing[0]}…); download them."
            )
        return files
    return sorted(folder.glob("*.safetensors"))


def _index_shards(index: Path) -> set[str]:
    """The shard file names a model.safetensors.index.json names, each a plain name inside its folder."""
    data = _read_json(index, _MAX_INDEX, "model.safetensors.index.json")
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise QuantDeskError(
            f"{index} is damaged (no weight_map of tensor names to shard files); download it again."
        )
    names = set(weight_map.values())
    for name in names:
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise QuantDeskError(
                f"{index} names a shard outside its folder ({name[:80]!r}); download the index again."
            )
    return names


def safetensors_tensors(path: Path) -> list[tuple[str, str, int, int]]:
    """(name, dtype, element count, bytes) of each tensor in a .safetensors file, from its header alone."""
    found = []
    for name, tensor in read_safetensors_header(path).items():
        if name == "__metadata__" or not isinstance(tensor, dict):
            continue
        numel = 1
        for dim in tensor.get("shape", []):
            numel *= int(dim)
        start, end = tensor.get("data_offsets", (0, 0))
        found.append((name, str(tensor.get("dtype", "?")), numel, int(end) - int(start)))
    return found


def _count_safetensors(files: list[Path]) -> tuple[int, str | None]:
    """Parameters and the dominant dtype, from the headers alone."""
    total = 0
    by_dtype: Counter[str] = Counter()
    for path in files:
        for _name, dtype, numel, _nbytes in safetensors_tensors(path):
            total += numel
            by_dtype[dtype] += numel
    dtype = by_dtype.most_common(1)[0][0] if by_dtype else None
    return total, _ST_DTYPES.get(dtype, (dtype.lower() if dtype else None, 0))[0]


# --------------------------------------------------------------------------- config.json


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return None


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """Multimodal configs keep the language model's sizes in ``text_config``."""
    inner = config.get("text_config") or config.get("llm_config")
    if isinstance(inner, dict) and _first(config, "hidden_size", "n_embd", "d_model") is None:
        return {**config, **inner}
    return config


@dataclass
class _Dims:
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    experts: int | None
    experts_per_token: int | None
    expert_intermediate: int
    shared_expert_intermediate: int
    context: int | None
    gated: bool
    model_type: str


def _dims(config: dict[str, Any]) -> _Dims:
    cfg = _text_config(config)
    hidden = _first(cfg, "hidden_size", "n_embd", "d_model", "dim")
    layers = _first(cfg, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    heads = _first(cfg, "num_attention_heads", "n_head", "num_heads", "n_heads")
    vocab = _first(cfg, "vocab_size", "padded_vocab_size")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (hidden, layers, heads, vocab)):
        raise QuantDeskError(
            "config.json lacks the model's sizes (hidden_size, num_hidden_layers, num_attention_heads, "
            "vocab_size); is it a language model's config?"
        )
    for key, value in (("hidden_size", hidden), ("num_hidden_layers", layers), ("num_attention_heads", heads),
                       ("vocab_size", vocab)):
        _check_size(key, value)
    kv = _size(cfg, "num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num") or heads
    if cfg.get("multi_query") and not cfg.get("num_kv_heads"):
        kv = 1
    head_dim = _size(cfg, "head_dim") or hidden // heads
    model_type = str(cfg.get("model_type") or "")
    gated = model_type not in _PLAIN_MLP
    inter = _size(cfg, "intermediate_size", "ffn_hidden_size", "n_inner", "ffn_dim") or 4 * hidden
    experts = _size(cfg, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
    expert_inter = _size(cfg, "moe_intermediate_size", "expert_intermediate_size") or inter
    shared = _size(cfg, "shared_expert_intermediate_size") or 0
    if not shared and cfg.get("n_shared_experts"):
        shared = (_size(cfg, "n_shared_experts") or 0) * expert_inter
    tied = cfg.get("tie_word_embeddings")
    if tied is None:
        tied = model_type in {"gpt2", "gemma", "gemma2", "gemma3", "gemma3_text", "bloom", "opt"}
    return _Dims(
        vocab=int(vocab), hidden=int(hidden), layers=int(layers), heads=int(heads), kv_heads=int(kv),
        head_dim=int(head_dim), intermediate=int(inter), tied=bool(tied),
        experts=int(experts) if experts else None,
        experts_per_token=_size(cfg, "num_experts_per_tok", "moe_top_k", "num_experts_per_token"),
        expert_intermediate=int(expert_inter), shared_expert_intermediate=int(shared),
        context=_size(cfg, "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length",
                      "max_seq_len", "n_ctx"),
        gated=gated, model_type=model_type,
    )


def _check_size(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_DIM:
        shown = json.dumps(value)[:40] if isinstance(value, (int, float, str, bool)) else type(value).__name__
        raise _Malformed(f"{key} is {shown}, not a size a model can have")
    return value


def _size(cfg: dict[str, Any], *keys: str) -> int | None:
    """The first of ``keys`` that is set, as a checked whole number (a float like 4096.0 counts)."""
    for key in keys:
        value = cfg.get(key)
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return _check_size(key, value)
    return None


class _Malformed(ValueError):
    """A config.json value of the wrong type or size; becomes one sentence naming the file."""


def _malformed(path: Path | str, err: Exception) -> QuantDeskError:
    detail = str(err) if isinstance(err, _Malformed) else f"{type(err).__name__}: {err}"
    return QuantDeskError(f"{path} has a malformed value ({detail[:200]}); download config.json again.")


def _attention_params(d: _Dims, cfg: dict[str, Any]) -> int:
    if cfg.get("kv_lora_rank"):  # DeepSeek's multi-head latent attention
        nope, rope = int(cfg.get("qk_nope_head_dim") or 0), int(cfg.get("qk_rope_head_dim") or 0)
        v_dim, kv_rank = int(cfg.get("v_head_dim") or d.head_dim), int(cfg["kv_lora_rank"])
        q_rank = cfg.get("q_lora_rank")
        q_dim = d.heads * (nope + rope)
        q = d.hidden * int(q_rank) + int(q_rank) + int(q_rank) * q_dim if q_rank else d.hidden * q_dim
        kv = d.hidden * (kv_rank + rope) + kv_rank + kv_rank * d.heads * (nope + v_dim)
        return q + kv + d.heads * v_dim * d.hidden
    q_out = d.heads * d.head_dim
    kv_out = d.kv_heads * d.head_dim
    attn = d.hidden * (q_out + 2 * kv_out) + q_out * d.hidden
    if cfg.get("attention_bias") or cfg.get("use_bias") or not d.gated:  # q, k, v and o biases
        attn += q_out + 2 * kv_out + d.hidden
    elif d.model_type in {"qwen2", "qwen2_moe", "qwen2_vl"} or cfg.get("use_qkv_bias"):  # q, k, v only
        attn += q_out + 2 * kv_out
    if d.model_type in {"qwen3", "qwen3_moe", "gemma3", "gemma3_text"}:
        attn += 2 * d.head_dim  # per-head q_norm / k_norm
    elif d.model_type == "olmo2":
        attn += q_out + kv_out  # q_norm / k_norm over all heads
    return attn


def estimate_parameters(config: dict[str, Any]) -> int:
    """Parameter count of a decoder-only transformer from its config alone.

    Counts embeddings (and learned positions for GPT-2 style models), the output head
    unless tied, attention (q, k, v, o with the biases the architecture carries, or
    DeepSeek's latent attention), the MLP (gated: 3 matrices; classic: 2 with biases),
    MoE experts with router, shared experts and leading dense layers, and the norms.
    Matches transformers' own count for Llama, Mistral, Qwen2/3 (and MoE), Gemma 1-3,
    Mixtral, Phi, Phi-3, Granite (and MoE), StableLM, StarCoder2, GPT-NeoX, GPT-2,
    OLMo2 and DeepSeek-V2/V3 (SmolLM2 135M: 134,515,008); an estimate for the rest.
    """
    try:
        return _estimate(config)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as err:
        raise _malformed("config.json", err) from None


def _estimate(config: dict[str, Any]) -> int:
    d = _dims(config)
    cfg = _text_config(config)
    attn = _attention_params(d, cfg)
    mats = 3 if d.gated else 2
    dense = mats * d.hidden * d.intermediate + (0 if d.gated else d.intermediate + d.hidden)
    moe = 0
    if d.experts:
        moe = d.experts * mats * d.hidden * d.expert_intermediate + d.hidden * d.experts
        if d.shared_expert_intermediate:
            moe += mats * d.hidden * d.shared_expert_intermediate
            if d.model_type.startswith("qwen"):
                moe += d.hidden  # the shared expert's gate
        if cfg.get("topk_method") == "noaux_tc":
            moe += d.experts  # DeepSeek-V3's router bias
    dense_layers = min(d.layers, int(cfg.get("first_k_dense_replace") or 0)) if d.experts else d.layers
    norm = d.hidden * (2 if not d.gated or d.model_type in _LAYERNORM_BIAS else 1)
    norms_per_layer = {"gemma2": 4, "gemma3": 4, "gemma3_text": 4, "phi": 1}.get(d.model_type, 2)
    per_layer = attn + norms_per_layer * norm
    mlp = dense_layers * dense + (d.layers - dense_layers) * moe
    embed = d.vocab * d.hidden
    head = 0 if d.tied else d.vocab * d.hidden + (d.vocab if d.model_type == "phi" else 0)
    positions = int(d.context or 0) * d.hidden if d.model_type in {"gpt2", "gpt_bigcode"} else 0
    return embed + positions + head + d.layers * per_layer + mlp + norm


def _sliding(cfg: dict[str, Any], layers: int) -> tuple[int | None, int]:
    """(window, how many layers use it) from ``layer_types`` or the older sliding_window keys."""
    window = cfg.get("sliding_window")
    if not isinstance(window, int) or window <= 0 or cfg.get("use_sliding_window") is False:
        window = None
    types = cfg.get("layer_types")
    if isinstance(types, list) and types:
        count = sum(1 for t in types if "sliding" in str(t) or "chunked" in str(t))
        return (window if count else None), count
    if window is None:
        return None, 0
    model_type = cfg.get("model_type")
    if model_type == "gemma2":
        return window, layers // 2
    pattern = cfg.get("sliding_window_pattern")
    if isinstance(pattern, int) and pattern > 1:
        return window, layers - layers // pattern
    return window, layers


def _read_json(path: Path, limit: int, what: str) -> Any:
    """A small JSON file of a model, bounded in size and nesting; QuantDeskError with one sentence otherwise."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise QuantDeskError(f"{path} is not a regular file; point at the model's real {what}.")
        if info.st_size > limit:
            raise QuantDeskError(
                f"{path} is {info.st_size:,} bytes, far larger than any {what}; download it again."
            )
        with path.open("rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as err:
        raise QuantDeskError(f"Cannot read {path}: {err.strerror or err}.") from None
    if len(raw) > limit:
        raise QuantDeskError(f"{path} is far larger than any {what}; download it again.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise QuantDeskError(f"{path} is not JSON (not even text); download {what} again.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise QuantDeskError(
            f"{path} is not valid JSON (line {err.lineno}: {err.msg}); download {what} again."
        ) from None
    except RecursionError:
        raise QuantDeskError(f"{path} is nested far too deeply to be a real {what}; download it again.") from None
    except ValueError as err:  # e.g. an integer with thousands of digits
        raise QuantDeskError(f"{path} holds a value no {what} has ({err}); download it again.") from None


def _read_config(path: Path) -> dict[str, Any]:
    config = _read_json(path, _MAX_CONFIG, "config.json")
    if not isinstance(config, dict):
        raise QuantDeskError(f"{path} is not a model config (expected a JSON object); download config.json again.")
    return config


def _dtype_from_config(cfg: dict[str, Any]) -> str | None:
    raw = _first(cfg, "torch_dtype", "dtype")
    return _CONFIG_DTYPES.get(str(raw), str(raw)) if raw else None


def _quantization(cfg: dict[str, Any]) -> str | None:
    q = cfg.get("quantization_config")
    if not isinstance(q, dict):
        return None
    method = str(q.get("quant_method") or "quantized")
    if method == "bitsandbytes":
        method = "bnb-nf4" if q.get("load_in_4bit") else "bnb-int8" if q.get("load_in_8bit") else "bitsandbytes"
    return method


def _tokenizer_facts(folder: Path) -> tuple[bool, bool]:
    has_tok = any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "spiece.model",
                                                    "tiktoken.model", "vocab.json"))
    chat = (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file()
    tok_cfg = folder / "tokenizer_config.json"
    if not chat and tok_cfg.is_file():
        try:
            tok = _read_json(tok_cfg, _MAX_INDEX, "tokenizer_config.json")
            chat = isinstance(tok, dict) and bool(tok.get("chat_template"))
        except QuantDeskError:
            chat = False
    return has_tok, chat


def _from_config(config: dict[str, Any], config_path: Path, kind: str) -> ModelInfo:
    """The model as its config.json describes it; a value of the wrong type or size is one sentence."""
    try:
        return _describe_config(config, config_path, kind)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as err:
        raise _malformed(config_path, err) from None


def _describe_config(config: dict[str, Any], config_path: Path, kind: str) -> ModelInfo:
    from engine.gguf_converter import is_supported

    d = _dims(config)
    cfg = _text_config(config)
    archs = config.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise _Malformed("architectures is not a list of class names")
    arch = archs[0] if archs else None
    window, sliding_layers = _sliding(cfg, d.layers)
    folder = config_path.parent
    has_tok, has_chat = _tokenizer_facts(folder)
    try:
        convertible = bool(arch) and is_supported(arch)
    except QuantDeskError:
        convertible = False
    return ModelInfo(
        kind=kind, path=str(folder if kind == "hf" else config_path), architecture=arch,
        model_type=d.model_type or None, parameters=_estimate(config), parameters_estimated=True,
        dtype=_dtype_from_config(cfg), bytes_on_disk=0, context_length=int(d.context) if d.context else None,
        layers=d.layers, hidden_size=d.hidden, intermediate_size=d.intermediate, vocab_size=d.vocab,
        attention_heads=d.heads, kv_heads=d.kv_heads, head_dim=d.head_dim, sliding_window=window,
        sliding_window_layers=sliding_layers, experts=d.experts,
        experts_per_token=int(d.experts_per_token) if d.experts_per_token else None, tied_embeddings=d.tied,
        has_tokenizer=has_tok, has_chat_template=has_chat, gguf_convertible=convertible,
        quantized=_quantization(config),
    )


def _inspect_folder(folder: Path) -> ModelInfo:
    config_path = folder / "config.json"
    st_files = _safetensors_files(folder)
    pickles = sorted(p for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES and p.is_file()
                     and not p.name.startswith(("training_args", "optimizer", "scheduler", "rng_state")))
    if not config_path.is_file():
        ggufs = sorted(folder.glob("*.gguf"))
        if len(ggufs) == 1 and not st_files:
            return _inspect_gguf(ggufs[0])
        if ggufs:
            raise QuantDeskError(f"{folder} holds {len(ggufs)} GGUF files; point at one of them.")
        if st_files or pickles:
            raise QuantDeskError(f"{folder} has weights but no config.json; download the model's config.json too.")
        raise QuantDeskError(
            f"{folder} holds no model (no config.json, safetensors or .gguf); "
            "point at a Hugging Face model folder, a config.json or a .gguf file."
        )
    config = _read_config(config_path)
    if not st_files and not pickles:
        return _from_config(config, config_path, "config")
    info = _from_config(config, config_path, "hf")
    if st_files:
        counted, dtype = _count_safetensors(st_files)
        weights = st_files
        if not info.quantized:  # packed quantized tensors would undercount; keep the config's figure
            info.parameters, info.parameters_estimated = counted, False
        info.dtype = dtype or info.dtype
    else:
        weights = pickles
        info.pickle_only = True
        info.warnings.append(
            "Only pickle (.bin) weights: QuantDesk counts parameters from config.json; "
            "pickle files can run code when loaded, so prefer a safetensors download."
        )
    info.weight_files = [p.name for p in weights]
    info.bytes_on_disk = sum(p.stat().st_size for p in weights)
    if not info.has_tokenizer:
        info.warnings.append("No tokenizer files: download tokenizer.json (or tokenizer.model) too.")
    if not info.has_chat_template:
        info.warnings.append("No chat template: this looks like a base model; chat will use plain text.")
    if not info.gguf_convertible:
        info.warnings.append(f"llama.cpp's converter does not support {info.architecture}; GGUF is not possible.")
    return info


# --------------------------------------------------------------------------- GGUF


# llama_ftype values of the file types not in engine.formats (llama.cpp's LLAMA_FTYPE_MOSTLY_*).
_OTHER_FTYPES = {3: "Q4_1", 8: "Q5_0", 9: "Q5_1", 11: "Q3_K_S", 13: "Q3_K_L", 21: "Q2_K_S", 22: "IQ3_XS",
                 23: "IQ3_XXS", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 31: "IQ1_M",
                 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE"}


def _ftype_name(ftype: Any) -> str | None:
    if not isinstance(ftype, int):
        return None
    from engine.formats import FORMATS

    for fmt in FORMATS.values():
        if fmt.gguf_ftype == ftype:
            return fmt.name
    return _OTHER_FTYPES.get(ftype, f"type {ftype}")


def _inspect_gguf(path: Path) -> ModelInfo:
    from engine.gguf_header import LongArray, read_gguf_header

    header = read_gguf_header(path)
    fields = header.fields
    arch = str(fields.get("general.architecture") or "unknown")

    def arch_int(key: str) -> int | None:
        value = fields.get(f"{arch}.{key}")
        if isinstance(value, list):  # per-layer values
            value = max(value) if value else None
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    layers = arch_int("block_count")
    heads = arch_int("attention.head_count")
    kv = arch_int("attention.head_count_kv") or heads
    hidden = arch_int("embedding_length")
    head_dim = arch_int("attention.key_length") or (hidden // heads if hidden and heads else None)
    window = arch_int("attention.sliding_window")
    ftype_name = _ftype_name(fields.get("general.file_type"))
    names = {t.name for t in header.tensors}
    token_embd = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    vocab = arch_int("vocab_size") or (int(token_embd.shape[-1]) if token_embd is not None else None)
    pattern = fields.get(f"{arch}.attention.sliding_window_pattern")
    sliding_layers = 0
    if window:  # the pattern marks sliding layers; without one every layer slides
        sliding_layers = sum(1 for p in pattern if p) if isinstance(pattern, list) else layers or 0
    tokens = fields.get("tokenizer.ggml.tokens")
    return ModelInfo(
        kind="gguf", path=str(path), architecture=arch, model_type=arch,
        parameters=sum(t.n_elements for t in header.tensors), parameters_estimated=False, dtype=ftype_name,
        bytes_on_disk=header.file_size, context_length=arch_int("context_length"), layers=layers,
        hidden_size=hidden, intermediate_size=arch_int("feed_forward_length"), vocab_size=vocab,
        attention_heads=heads, kv_heads=kv, head_dim=head_dim, sliding_window=window,
        sliding_window_layers=sliding_layers, experts=arch_int("expert_count"),
        experts_per_token=arch_int("expert_used_count"), tied_embeddings="output.weight" not in names,
        has_tokenizer=isinstance(tokens, (list, LongArray)), has_chat_template=bool(fields.get("tokenizer.chat_template")),
        gguf_convertible=False, quantized=None if ftype_name in (None, "F32", "F16", "BF16") else ftype_name,
        weight_files=[path.name],
    )


# --------------------------------------------------------------------------- entry point


def inspect_model(path: str | Path) -> ModelInfo:
    """Inspect a model folder, config.json, .safetensors (its folder) or .gguf without loading weights."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise QuantDeskError(f"{path} does not exist; check the path.") from None
    except OSError as err:
        raise QuantDeskError(f"Cannot read {path}: {err.strerror or err}.") from None
    if stat.S_ISDIR(mode):
        return _inspect_folder(p)
    refuse_special(p, mode)
    magic = read_head(p, 4)
    if magic == GGUF_MAGIC or p.suffix.lower() == ".gguf":
        return _inspect_gguf(p)
    if p.suffix.lower() == ".safetensors" or p.name == "model.safetensors.index.json":
        return _inspect_folder(p.parent)
    if p.suffix.lower() == ".json":
        return _from_config(_read_config(p), p, "config")
    raise QuantDeskError(
        f"{path} is not a model QuantDesk can read; point at a Hugging Face model folder, a config.json or a .gguf file."
    )


# --------------------------------------------------------------------------- Hugging Face cache


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads (HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _snapshot(repo: Path) -> Path | None:
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        pinned = snapshots / ref.read_text(encoding="utf-8", errors="replace").strip()
        if pinned.is_dir():
            return pinned
    found = [d for d in snapshots.iterdir() if d.is_dir()] if snapshots.is_dir() else []
    return max(found, key=lambda d: d.stat().st_mtime, default=None)


def cached_models(cache: Path | None = None) -> list[tuple[str, Path]]:
    """Models already downloaded to the Hugging Face cache, as (``org/name``, folder or .gguf), so the
    app can offer them in one click. Only looks at the disk; never raises for a missing or odd cache."""
    root = cache or hf_cache_dir()
    found: list[tuple[str, Path]] = []
    try:
        repos = sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith("models--"))
    except OSError:
        return []
    for repo in repos:
        name = repo.name.removeprefix("models--").replace("--", "/")
        try:
            snap = _snapshot(repo)
            if snap is None:
                continue
            if (snap / "config.json").is_file() and any(snap.glob("*.safetensors")):
                found.append((name, snap))
            for gguf in sorted(snap.glob("*.gguf")):
                found.append((f"{name}/{gguf.name}", gguf))
        except OSError:
            continue
    return found


def model_name(source: Path) -> str:
    """The short name outputs are called after.

    ``SmolLM2`` for a folder, ``name`` for a Hugging Face cache snapshot
    (``models--org--name/snapshots/<hash>``), ``foo`` for ``foo-F16.gguf`` (a
    trailing GGUF type is dropped).
    """
    import re

    from engine.formats import FORMATS

    source = Path(source)
    if source.name == "config.json":
        source = source.parent
    if source.parent.name == "snapshots" and source.parent.parent.name.startswith("models--"):
        return source.parent.parent.name.split("--")[-1]
    if source.is_dir() or not source.suffix:
        return source.name
    stem = source.stem
    names = sorted((f.name for f in FORMATS.values() if f.family == "gguf"), key=len, reverse=True)
    pattern = r"[-_.](" + "|".join(re.escape(n) for n in names) + r")$"
    return re.sub(pattern, "", stem, flags=re.I) or stem
