"""The decision tree of DESIGN.md, branch by branch, through the planning overrides."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from engine.errors import QuantDeskError
from engine.formats import FORMATS
from engine.hardware import Overrides, apply_overrides, detect_machine
from engine.inspect import inspect_model
from engine.recommend import recommend


@pytest.fixture(scope="module")
def here():
    """This machine without its GPUs, so that --vram alone plans the same generic card everywhere."""
    return replace(detect_machine(), gpus=[])


@pytest.fixture(scope="module")
def plan(here):
    """plan(model, ctx=None, **overrides): a recommendation on a planned machine (64 GiB RAM unless said)."""

    def run(model, ctx=None, **overrides):
        overrides.setdefault("ram", "64GiB")
        return recommend(model, apply_overrides(here, Overrides(**overrides)), ctx)

    return run


@pytest.fixture(scope="module")
def llama2(model_config):
    return inspect_model(model_config("llama-2-7b"))


@pytest.fixture(scope="module")
def llama3_70b(model_config):
    return inspect_model(model_config("llama-3-70b"))


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    return inspect_model(smollm2_dir)


def _bits(option) -> float:
    return FORMATS[option.format].bits_per_weight


def test_gpu_twice_fp16_keeps_fp16(plan, llama2):
    rec = plan(llama2, vram="32GiB")
    assert rec.situation == "gpu-roomy" and rec.best.format == "hf:fp16"
    assert rec.best.device == "cuda" and rec.best.fit == "fits" and rec.best.available
    assert "twice the FP16 size" in rec.best.why


def test_gpu_about_fp16_size_gets_int8(plan, llama2):
    rec = plan(llama2, vram="20GiB")
    assert rec.situation == "gpu-fp16-size" and rec.best.format == "hf:bnb-int8"
    assert rec.best.fit == "fits"


def test_gpu_below_fp16_gets_4bit(plan, llama2):
    rec = plan(llama2, vram="8GiB")
    assert rec.situation == "gpu-4bit"
    assert _bits(rec.best) < 5 and rec.best.fit in ("fits", "tight")
    assert rec.best.format in ("hf:bnb-nf4", "gguf:Q4_K_M", "hf:awq-4bit", "hf:gptq-4bit")
    # INT8 needs more than 8 GiB with a 4096-token cache: it sinks to the bottom.
    int8 = next(o for o in rec.options if o.format == "hf:bnb-int8")
    assert int8.fit == "no" and rec.options[-1].format == "hf:bnb-int8"


def test_awq_gptq_are_made_and_wait_behind_nf4_only_without_their_library(plan, llama2, monkeypatch):
    from engine.backends.int4.backend import AwqBackend, GptqBackend

    options = plan(llama2, vram="8GiB").options
    order, rows = [o.format for o in options], {o.format: o for o in options}
    assert rows["hf:awq-4bit"].available and rows["hf:gptq-4bit"].available
    assert order.index("hf:awq-4bit") < order.index("hf:bnb-nf4")
    for backend in (AwqBackend, GptqBackend):  # as on a machine without gptqmodel
        monkeypatch.setattr(backend, "required_packages", (("gptqmodel_is_not_here", "gptqmodel==7.6.0"),))
    rec = plan(llama2, vram="8GiB")
    order = [o.format for o in rec.options]
    for fid in ("hf:awq-4bit", "hf:gptq-4bit"):
        opt = rec.options[order.index(fid)]
        assert not opt.available and "pip install" in opt.install_hint and "gptqmodel==7.6.0" in opt.install_hint
        assert order.index(fid) > order.index("hf:bnb-nf4")


def test_tiny_gpu_offloads_part_of_a_gguf(plan, llama2):
    rec = plan(llama2, vram="2GiB", ram="16GiB")
    assert rec.situation == "gpu-tiny"
    assert rec.best.format == "gguf:Q4_K_M" and rec.best.device == "split"
    assert 0 < rec.best.gpu_layers < 32 and rec.best.layers == 32
    assert f"{rec.best.gpu_layers} of 32 layers fit on the GPU" in rec.best.why


def test_no_gpu_gets_q4_k_m(plan, llama2):
    rec = plan(llama2, cpu_only=True, ram="16GiB")
    assert rec.situation == "cpu"
    assert [o.format for o in rec.options[:3]] == ["gguf:Q4_K_M", "gguf:Q5_K_M", "gguf:Q6_K"]
    assert all(o.device == "cpu" for o in rec.options)
    assert "Fastest on the CPU" in rec.best.why


def test_cpu_only_overrides_a_planned_gpu(plan, llama2):
    assert plan(llama2, gpu="H100", cpu_only=True).situation == "cpu"


def test_hopper_gets_fp8_for_llama3_70b(plan, llama3_70b):
    rec = plan(llama3_70b, gpu="H100")
    assert rec.best.format == "hf:fp8" and rec.best.device == "cuda" and rec.best.fit in ("fits", "tight")
    assert rec.best.available and "Not available" not in rec.best.why  # FP8 has a backend (issue 11)
    assert "Hopper" in rec.best.why


def test_hopper_with_room_keeps_fp16_then_fp8(plan, llama2):
    rec = plan(llama2, gpu="H100")
    assert [o.format for o in rec.options[:2]] == ["hf:fp16", "hf:fp8"]


def test_fp8_needs_ada_or_newer(plan, llama2):
    assert "hf:fp8" not in [o.format for o in plan(llama2, gpu="T4", vram="32GiB").options]
    ada = [o.format for o in plan(llama2, gpu="RTX 4090", vram="32GiB").options]
    assert "hf:fp8" in ada and ada[0] == "hf:fp16"


def test_70b_on_a_4090_splits_a_4bit_gguf(plan, llama3_70b):
    rec = plan(llama3_70b, gpu="RTX 4090")
    assert rec.situation == "gpu-tiny" and rec.best.device == "split" and _bits(rec.best) < 5


def test_small_model_on_cpu_avoids_4bit(plan, smollm2):
    rec = plan(smollm2, cpu_only=True)
    assert _bits(rec.best) >= 5 and rec.best.format == "gguf:Q8_0"
    order = [o.format for o in rec.options]
    assert order.index("gguf:Q6_K") < order.index("gguf:Q4_K_M")
    q4 = rec.options[order.index("gguf:Q4_K_M")]
    assert "4-bit hurts small models" in q4.why


def test_small_model_on_a_small_gpu_avoids_4bit(plan, smollm2):
    rec = plan(smollm2, vram="300MiB")
    assert rec.situation in ("gpu-fp16-size", "gpu-4bit")
    assert _bits(rec.options[0]) >= 5


def test_unfitting_options_sink_but_tree_order_stays(plan, llama3_70b):
    rec = plan(llama3_70b, cpu_only=True, ram="40GiB")
    fits = [o.fit != "no" for o in rec.options]
    assert fits == sorted(fits, reverse=True)
    assert rec.best.fit in ("fits", "tight") and rec.best.format != "gguf:Q4_K_M"
    q4 = next(o for o in rec.options if o.format == "gguf:Q4_K_M")
    assert q4.fit == "no" and "Does not fit" in q4.why


def test_nothing_fits_says_what_to_do(plan, llama3_70b):
    rec = plan(llama3_70b, cpu_only=True, ram="8GiB")
    assert all(o.fit == "no" for o in rec.options)
    assert rec.best.format == "gguf:Q4_K_M"
    assert any("smaller model" in n for n in rec.notes)


def test_tight_fit(plan, llama2):
    rec = plan(llama2, vram="8GiB")
    q6 = next(o for o in rec.options if o.format == "gguf:Q6_K")
    assert q6.fit == "tight" and "Fits tightly" in q6.why


def test_context_defaults_caps_and_costs(plan, llama2, tiny_dir):
    assert plan(llama2, vram="8GiB").context == 4096
    capped = plan(llama2, 100_000, vram="8GiB")
    assert capped.context == 4096 and any("trained for 4096" in n for n in capped.notes)
    assert plan(inspect_model(tiny_dir), cpu_only=True).context == 2048
    short = plan(llama2, 512, vram="8GiB")
    long = plan(llama2, 4096, vram="8GiB")
    assert short.best.peak_bytes < long.best.peak_bytes
    with pytest.raises(QuantDeskError):
        plan(llama2, 0)


def test_backends_say_how_to_install(plan, llama2):
    rec = plan(llama2, vram="32GiB")
    fp16 = next(o for o in rec.options if o.format == "hf:fp16")
    assert fp16.available and fp16.install_hint is None
    for o in rec.options:
        assert o.available or o.install_hint, o.format
        if o.install_hint:
            assert o.install_hint in o.why


def test_gguf_input_only_requantizes(plan, tiny_gguf):
    rec = plan(inspect_model(tiny_gguf), cpu_only=True)
    assert rec.options and all(o.format.startswith("gguf:") for o in rec.options)


def test_unconvertible_architecture_has_no_gguf(plan, model_config, tmp_path):
    cfg = json.loads(model_config("llama-2-7b").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "architectures": ["NoSuchModelForCausalLM"]}))
    rec = plan(inspect_model(tmp_path), cpu_only=True)
    for o in rec.options:
        if o.format.startswith("gguf:"):
            assert not o.available and "converter does not support" in o.install_hint


def test_cpu_only_llama_build_is_noted(here, llama2):
    machine = replace(apply_overrides(here, Overrides(vram="8GiB", ram="64GiB")), llama_gpu_offload=False)
    rec = recommend(llama2, machine)
    assert any("CMAKE_ARGS" in n for n in rec.notes)
    gguf_on_gpu = next(o for o in rec.options if o.format.startswith("gguf:") and o.device == "cuda")
    assert "CUDA build of llama.cpp" in gguf_on_gpu.why


def test_config_only_plan_says_download(plan, llama2):
    assert any("download the weights" in n for n in plan(llama2, vram="8GiB").notes)


def test_to_dict_contract(plan, llama2):
    d = json.loads(json.dumps(plan(llama2, vram="8GiB").to_dict()))
    assert d["context"] == 4096 and d["options"]
    for o in d["options"]:
        assert {"format", "size_bytes", "peak_bytes", "device", "fit", "why"} <= set(o)
        assert o["device"] in ("cuda", "cpu", "split") and o["fit"] in ("fits", "tight", "no")
        assert o["format"] in FORMATS and o["peak_bytes"] > o["size_bytes"] > 0


def test_quantized_gguf_only_goes_smaller(plan):
    from engine.demo import smollm2_gguf_path

    rec = plan(inspect_model(smollm2_gguf_path()), cpu_only=True)
    assert rec.options and all(_bits(o) < 5 for o in rec.options)
    assert any("already Q4_1" in n for n in rec.notes)


def test_several_gpus_add_up(here, llama2):
    two = apply_overrides(here, Overrides(vram="12GiB", ram="64GiB"))
    two = replace(two, gpus=[two.gpus[0], replace(two.gpus[0], index=1)])
    rec = recommend(llama2, two)
    assert rec.situation == "gpu-fp16-size" and "2 GPUs" in rec.best.why


@pytest.fixture(scope="module")
def mixtral(model_config):
    return inspect_model(model_config("mixtral-8x7b"))


def test_awq_before_gptq_on_a_4bit_gpu(plan, llama2):
    order = [o.format for o in plan(llama2, vram="8GiB").options]
    assert order.index("hf:awq-4bit") < order.index("hf:gptq-4bit")


def test_mixture_of_experts_gets_gptq_before_awq_with_the_reason(plan, mixtral):
    rec = plan(mixtral, vram="48GiB", ram="128GiB")
    assert rec.situation == "gpu-4bit"
    order = [o.format for o in rec.options]
    assert order.index("hf:gptq-4bit") < order.index("hf:awq-4bit")
    awq = rec.options[order.index("hf:awq-4bit")]
    assert "mixture-of-experts" in awq.why and "GPTQ comes before it" in awq.why


def test_cpu_rows_offer_importance_matrix_types(plan, llama2):
    """The IQ types rank above the k-quants of about their size and say why; Q4_K_M mentions --imatrix."""
    rec = plan(llama2, cpu_only=True, ram="16GiB")
    assert "--imatrix auto" in rec.best.why
    order = [o.format for o in rec.options]
    iq = [f for f in order if f.startswith("gguf:IQ")]
    assert "gguf:IQ4_XS" in iq
    assert order.index("gguf:IQ4_XS") < order.index("gguf:Q3_K_M") < order.index("gguf:Q2_K")
    for f in iq:
        assert "importance matrix" in rec.options[order.index(f)].why


@pytest.mark.slow
def test_gguf_sizes_are_exact_from_a_gguf_source_or_a_kept_intermediate(plan, here, smollm2_gguf, smollm2_dir,
                                                                       tmp_path):
    from engine.artifacts import write_sidecar

    real = {t: smollm2_gguf[t].stat().st_size for t in ("Q4_K_M", "Q6_K", "Q8_0")}
    rec = plan(inspect_model(smollm2_gguf["F16"]), cpu_only=True)
    by = {o.format: o for o in rec.options}
    for t, size in real.items():
        assert by[f"gguf:{t}"].size_exact and abs(by[f"gguf:{t}"].size_bytes - size) < 32 * 1024, t
    assert any("GGUF file sizes are exact" in n for n in rec.notes)
    assert json.loads(json.dumps(rec.to_dict()))["options"][0]["size_exact"] is True

    hf = inspect_model(smollm2_dir)
    machine = apply_overrides(here, Overrides(ram="64GiB", cpu_only=True))
    estimated = recommend(hf, machine, outputs=tmp_path)  # no intermediate there yet: estimates
    assert not any(o.size_exact for o in estimated.options)
    kept = tmp_path / "smollm2-F16.gguf"  # a job's kept intermediate, made from this folder
    kept.symlink_to(smollm2_gguf["F16"])
    write_sidecar(kept, format="gguf:F16", source=smollm2_dir)
    exact = {o.format: o for o in recommend(hf, machine, outputs=tmp_path).options}
    assert exact["gguf:Q4_K_M"].size_exact and abs(exact["gguf:Q4_K_M"].size_bytes - real["Q4_K_M"]) < 32 * 1024
    assert not exact["hf:fp16"].size_exact
    assert not any(o.size_exact for o in recommend(hf, machine, exact=False, outputs=tmp_path).options)
