"""Sizes, KV cache, context and partial offload, checked against hand-computed figures."""

from __future__ import annotations

import pytest

from engine.errors import QuantDeskError
from engine.estimate import (
    context_for,
    estimate,
    gguf_split,
    kv_cache_bytes,
    overhead_bytes,
    weights_bytes,
)
from engine.formats import FORMATS
from engine.inspect import inspect_model

GiB = 1024**3


@pytest.fixture(scope="module")
def llama2(model_config):
    return inspect_model(model_config("llama-2-7b"))


@pytest.mark.parametrize("fid", ["gguf:F16", "gguf:Q8_0", "gguf:Q6_K", "gguf:Q5_K_M", "gguf:Q4_K_M",
                                 "gguf:Q4_K_S", "gguf:Q3_K_M", "gguf:Q2_K", "gguf:IQ4_XS", "hf:fp16"])
def test_sizes_follow_bits_per_weight(llama2, fid):
    fmt = FORMATS[fid]
    plain = 6_738_415_616 * fmt.bits_per_weight / 8
    if fid == "hf:fp16":
        assert weights_bytes(llama2, fmt) == plain
    else:  # the output head kept at Q6_K or better, and the tokenizer, add a little
        assert plain <= weights_bytes(llama2, fmt) <= plain * 1.05


def test_gguf_estimates_match_real_files(smollm2_gguf, smollm2_dir):
    """SmolLM2's 576-wide rows defeat k-quants' 256-blocks: llama.cpp falls back, and so does the estimate."""
    model = inspect_model(smollm2_dir)
    for type_name in ("Q4_K_M", "Q6_K", "Q8_0", "F16"):
        real = smollm2_gguf[type_name].stat().st_size
        estimated = weights_bytes(model, FORMATS[f"gguf:{type_name}"])
        assert abs(estimated - real) / real < 0.03, (type_name, estimated, real)
        info = inspect_model(smollm2_gguf[type_name])
        assert info.parameters == 134_515_008 and info.dtype == type_name


def test_bnb_keeps_embeddings_in_16_bit(llama2):
    embed = 2 * 32000 * 4096  # untied: token embedding and output head
    nf4 = weights_bytes(llama2, FORMATS["hf:bnb-nf4"])
    assert nf4 == int((6_738_415_616 - embed) * 4.13 / 8 + embed * 2)
    assert weights_bytes(llama2, FORMATS["hf:bnb-int8"]) < weights_bytes(llama2, FORMATS["hf:fp16"]) / 1.8


def test_kv_cache_formula(llama2, model_config):
    assert kv_cache_bytes(llama2, 4096) == 2 * 32 * 32 * 128 * 4096 * 2 == 2 * GiB
    l3 = inspect_model(model_config("llama-3-70b"))
    assert kv_cache_bytes(l3, 8192) == 2 * 80 * 8 * 128 * 8192 * 2  # GQA: 8 KV heads


def test_sliding_window_layers_hold_only_their_window(model_config):
    mistral = inspect_model(model_config("mistral-7b"))
    per_token = 2 * 32 * 8 * 128 * 2
    assert kv_cache_bytes(mistral, 2048) == per_token * 2048
    assert kv_cache_bytes(mistral, 32768) == per_token * 4096
    gemma = inspect_model(model_config("gemma-2-9b"))
    per_layer_token = 2 * 8 * 256 * 2
    assert kv_cache_bytes(gemma, 8192) == per_layer_token * (21 * 8192 + 21 * 4096)


def test_context_default_and_caps(llama2, tiny_dir):
    assert context_for(llama2) == 4096
    assert context_for(llama2, 1024) == 1024
    assert context_for(llama2, 100_000) == 4096  # the model's own
    tiny = inspect_model(tiny_dir)
    assert context_for(tiny) == 2048
    with pytest.raises(QuantDeskError, match="at least 1 token"):
        context_for(llama2, 0)


def test_peak_is_weights_plus_kv_plus_overhead(llama2):
    est = estimate(llama2, FORMATS["gguf:Q4_K_M"], 4096, "cpu")
    assert est.peak_bytes == est.size_bytes + est.kv_cache_bytes + est.overhead_bytes
    assert 100 * 1024**2 < est.overhead_bytes < 1 * GiB
    assert est.to_dict()["peak_bytes"] == est.peak_bytes
    # A longer context costs more memory, never less.
    assert estimate(llama2, FORMATS["hf:fp16"], 4096).peak_bytes > estimate(llama2, FORMATS["hf:fp16"], 512).peak_bytes


def test_cuda_context_costs_more_than_cpu(llama2):
    fmt = FORMATS["gguf:Q4_K_M"]
    assert overhead_bytes(llama2, fmt, 4096, "cuda") > overhead_bytes(llama2, fmt, 4096, "cpu")


def test_partial_offload_layers(llama2):
    fmt = FORMATS["gguf:Q4_K_M"]
    assert gguf_split(llama2, fmt, 4096, 256 * 1024**2).gpu_layers == 0
    assert gguf_split(llama2, fmt, 4096, 80 * GiB).gpu_layers == 32
    layers = [gguf_split(llama2, fmt, 4096, v * GiB).gpu_layers for v in (2, 3, 4, 5, 6)]
    assert layers == sorted(layers) and 0 < layers[0] < layers[-1] < 32
    split = gguf_split(llama2, fmt, 4096, 4 * GiB)
    assert split.gpu_bytes <= 4 * GiB
    assert split.gpu_bytes + split.cpu_bytes > weights_bytes(llama2, fmt)  # nothing is lost in the split
