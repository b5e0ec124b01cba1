"""GPTQ and AWQ 4-bit with gptqmodel on CPU, real weights: reload, size, record, quality against RTN, cancel, refusals.

One module-scoped job makes both outputs of smollm2 cut to its first two decoder layers
(real weights, tokenizer and chat template; tests/fixtures/models.py) from a small
calibration set (8 samples of 128 tokens), with group size 64: smollm2's layers are 576
wide, which is not a whole number of 128-groups (the preflight refuses g128 for it).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.artifacts import read_sidecar, size_on_disk
from engine.backends import QuantizeRequest
from engine.backends.int4.backend import AwqBackend, GptqBackend
from engine.backends.int4.plan import estimate_output_bytes, read_source, target_for
from engine.errors import JobCancelled, QuantDeskError
from engine.formats import get_format
from engine.jobs import CancelToken

if importlib.util.find_spec("gptqmodel") is None:  # found without importing it: that costs seconds
    pytest.skip("gptqmodel is not installed", allow_module_level=True)

GROUP = 64
CALIB = {"calibration_samples": 8, "calibration_seq_len": 128}
LAYERS, PER_LAYER = 2, 7


def _calibration_file(folder: Path) -> str:
    """The built-in calibration texts when they are there; else English prose and code from Python's own
    documentation strings (never the evaluation texts)."""
    from engine.resources import resource_path

    if resource_path("calibration", "prose.txt").is_file():
        return "builtin"
    import argparse
    import collections
    import inspect
    import json as json_module
    import pathlib
    import textwrap

    docs = [inspect.getdoc(m) or "" for m in (argparse, collections, json_module, pathlib, textwrap, inspect)]
    docs += [inspect.getsource(textwrap)]
    path = folder / "calibration.txt"
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return str(path)


def _run(source: Path, to: str, out: Path, cancel: CancelToken | None = None, on_progress=None, **options):
    from tests.fixtures.quantize import run_quantize

    return run_quantize(source, to, out, cancel=cancel, on_progress=on_progress, **options)


@pytest.fixture(scope="module")
def int4_smollm2(smollm2_cut_dir, tmp_path_factory):
    """smollm2 (two layers) → gptq-4bit and awq-4bit (g64) in one job, on the CPU."""
    out = tmp_path_factory.mktemp("int4-smollm2")
    data = _calibration_file(out.parent)
    started = time.monotonic()
    run = _run(smollm2_cut_dir, "gptq-4bit,awq-4bit", out, device="cpu", int4_group_size=GROUP,
               calibration_data=data, **CALIB)
    run["seconds"] = time.monotonic() - started
    run["calibration_data"] = data
    return run


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gptq-4bit", "awq-4bit"])
def test_output_reloads_with_plain_transformers_and_gives_finite_logits(int4_smollm2, kind):
    import torch
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = int4_smollm2["outputs"][kind]
    assert folder.name == f"smollm2-2layers-{kind}-g{GROUP}"
    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu")
    assert sum(isinstance(m, BaseQuantLinear) for m in model.modules()) == LAYERS * PER_LAYER
    ids = AutoTokenizer.from_pretrained(folder)("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    del model


@pytest.mark.slow
def test_folders_are_4_bit_sized_and_carry_card_and_sidecar(int4_smollm2, smollm2_cut_dir):
    source = read_source(smollm2_cut_dir)
    for kind, folder in int4_smollm2["outputs"].items():
        fmt = get_format(kind)
        size = size_on_disk(folder)
        # The tied 28M-parameter embedding stays bf16; the decoder layers' weights shrink to about 0.3 of bf16.
        assert size_on_disk(smollm2_cut_dir) - size > 0.6 * source.quantized_weights * 2
        expected = estimate_output_bytes(source, target_for(fmt, QuantizeRequest(
            source=smollm2_cut_dir, targets=[fmt], out_dir=folder.parent, options={"int4_group_size": GROUP}).int4))
        assert abs(size - expected) < 0.05 * expected  # the estimate counts 4 MiB for tokenizer and config
        config = json.loads((folder / "config.json").read_text())
        quant = config["quantization_config"]
        assert quant["quant_method"] == kind.split("-")[0] and quant["bits"] == 4 and quant["group_size"] == GROUP
        assert config["dtype"] == "bfloat16" and "offload_to_disk_path" not in json.dumps(config)
        record = read_sidecar(folder)
        assert record is not None and record.format == fmt.id and record.source_params == 35_392_320
        opts = record.options
        assert opts["group_size"] == GROUP and opts["sym"] is True and opts["library"] == "gptqmodel 7.6.0"
        assert opts["calibration"]["samples"] == 8 and opts["calibration"]["seq_len"] == 128
        assert len(opts["calibration"]["sha256"]) == 64
        if kind == "gptq-4bit":
            assert opts["desc_act"] is False and opts["damp"] == 0.05
        assert {"gptqmodel", "optimum", "torch", "transformers"} <= set(record.versions)
        card = (folder / "README.md").read_text()
        method = kind.split("-")[0]
        assert f"vllm serve {folder.name}" in card and f"--quantization {method}" in card
        assert f"`{method}_marlin`" in card and "compute capability 8.0" in card
        assert 'pip install transformers optimum "gptqmodel==7.6.0"' in card
        assert "Calibrated on 8 samples of 128 tokens" in card


@pytest.mark.slow
def test_progress_goes_calibrating_then_quantizing_layer_by_layer(int4_smollm2):
    for fmt in ("hf:gptq-4bit", "hf:awq-4bit"):
        events = [e for e in int4_smollm2["events"] if e.extra.get("format") == fmt]
        steps = [e.step for e in events]
        assert steps.index("calibrating") < steps.index("quantizing") < steps.index("saving") < \
            steps.index("verifying")
        layers = [e.extra["layer_index"] for e in events if "layer_index" in e.extra]
        assert layers == list(range(1, LAYERS + 1))
        counts = [e.tensor_index for e in events if e.step == "quantizing" and e.tensor_index]
        assert counts == sorted(counts) and counts[-1] == LAYERS * PER_LAYER
        assert all(e.tensor_count == LAYERS * PER_LAYER for e in events if e.step == "quantizing")
    fractions = [e.fraction for e in int4_smollm2["events"]]
    assert fractions == sorted(fractions)
    assert any(e.step == "warning" and "chat model" in e.message for e in int4_smollm2["events"]) == \
        (int4_smollm2["calibration_data"] != "builtin")


_RTN = """
import os, sys
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")  # gptqmodel's loader pool needs two on a small machine
import torch
from gptqmodel import GPTQModel
from gptqmodel.quantization.config import RTNConfig
model = GPTQModel.load(sys.argv[1], RTNConfig(bits=4, group_size=int(sys.argv[3]), sym=True, offload_to_disk=False),
                       device="cpu", dtype=torch.float32)
model.quantize(None)
for p in model.model.parameters():
    p.data = p.data.to(torch.bfloat16)
model.save(sys.argv[2])
"""


@pytest.mark.slow
def test_calibrated_gptq_and_awq_beat_round_to_nearest_of_the_same_library(int4_smollm2, smollm2_cut_dir,
                                                                           tmp_path):
    """KLD against the original on the project's evaluation text: RTN 4-bit g64 made by gptqmodel
    (no calibration, same layout) is the baseline both calibrated methods must beat."""
    from engine.evaluate.run import EvalRequest, evaluate
    from engine.evaluate.texts import builtin_text
    from engine.jobs import run_job

    rtn = tmp_path / "smollm2-2layers-rtn-4bit"
    subprocess.run([sys.executable, "-c", _RTN, str(smollm2_cut_dir), str(rtn), str(GROUP)], check=True,
                   capture_output=True, timeout=900, cwd=tmp_path)  # its logs/ folder stays in tmp
    text = builtin_text("prose")[:3000]  # two chunks of 256: the gaps are 20-40% of the baseline

    def kld(folder: Path) -> float:
        request = EvalRequest(model=folder, text=text, n_ctx=256, base=smollm2_cut_dir, threads=2, speed=False)
        return run_job(evaluate(request, save=False))["kld_mean"]

    baseline = kld(rtn)
    gptq, awq = (kld(int4_smollm2["outputs"][k]) for k in ("gptq-4bit", "awq-4bit"))
    print(f"\nKLD vs the original: RTN {baseline:.4f}, GPTQ {gptq:.4f}, AWQ {awq:.4f}")
    assert gptq < baseline and awq < baseline


@pytest.mark.slow
def test_cancel_during_calibration_leaves_nothing(tiny_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    cancel = CancelToken()
    seen: list[str] = []
    cancelled_at: list[float] = []

    def on_progress(event):
        seen.append(event.step)
        if event.step == "calibrating" and event.message.startswith("Running") and not cancel.cancelled:
            cancel.cancel()
            cancelled_at.append(time.monotonic())

    data = _calibration_file(tmp_path)
    with pytest.raises(JobCancelled):
        _run(tiny_dir, "gptq-4bit", out, cancel=cancel, on_progress=on_progress, device="cpu",
             calibration_data=data, calibration_samples=64, calibration_seq_len=256)
    assert time.monotonic() - cancelled_at[0] < 10
    assert "quantizing" not in seen and "saving" not in seen
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def _request(source: Path, to: str, out: Path, **options) -> QuantizeRequest:
    from engine.formats import parse_targets

    return QuantizeRequest(source=source, targets=parse_targets(to), out_dir=out, device="cpu", options=options)


def test_mixture_of_experts_is_refused_for_awq_in_one_sentence(tiny_dir, tmp_path):
    moe = tmp_path / "tiny-moe"
    moe.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (moe / name).symlink_to(tiny_dir / name)
    config = json.loads((tiny_dir / "config.json").read_text())
    config.update(model_type="mixtral", architectures=["MixtralForCausalLM"], num_local_experts=8)
    (moe / "config.json").write_text(json.dumps(config))
    with pytest.raises(QuantDeskError) as err:
        AwqBackend().preflight(_request(moe, "awq-4bit", tmp_path / "out"), [get_format("awq-4bit")])
    message = str(err.value)
    assert "mixture-of-experts" in message and "choose gptq-4bit" in message and message.count(". ") == 0
    assert GptqBackend().preflight(_request(moe, "gptq-4bit", tmp_path / "out"), [get_format("gptq-4bit")])
    config["model_type"] = "quantdesk_unknown"
    (moe / "config.json").write_text(json.dumps(config))
    with pytest.raises(QuantDeskError, match="gptqmodel does not support the 'quantdesk_unknown' architecture"):
        GptqBackend().preflight(_request(moe, "gptq-4bit", tmp_path / "out"), [get_format("gptq-4bit")])
    assert not (tmp_path / "out").exists()


def test_group_size_that_does_not_divide_the_layers_names_one_that_does(smollm2_dir, tmp_path):
    for backend, to in ((GptqBackend(), "gptq-4bit"), (AwqBackend(), "awq-4bit")):
        with pytest.raises(QuantDeskError, match="layers 576 wide, not a multiple of the group size 128.*"
                                                 "choose --group-size 64"):
            backend.preflight(_request(smollm2_dir, to, tmp_path / "out"), [get_format(to)])
    plan = GptqBackend().preflight(_request(smollm2_dir, "gptq-4bit", tmp_path / "out", int4_group_size=64),
                                   [get_format("gptq-4bit")])
    assert plan.finals[0].name == "smollm2-gptq-4bit-g64" and plan.compute_dtype == "float32"
    assert not (tmp_path / "out").exists()


def test_missing_package_names_the_exact_pip_command():
    class NeedsMissing(GptqBackend):
        required_packages = (("quantdesk_absent_pkg", "quantdesk-absent-pkg==1.0"),)

    with pytest.raises(QuantDeskError, match='install with: pip install "quantdesk-absent-pkg==1.0"'):
        NeedsMissing().validate_environment()
    assert GptqBackend().install_hint() is None and AwqBackend().install_hint() is None


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gptq-4bit", "awq-4bit"])
def test_cuda_output_reloads_on_the_gpu(kind, tiny_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    run = _run(tiny_dir, kind, tmp_path / "out", device="cuda", calibration_data=_calibration_file(tmp_path), **CALIB)
    record = read_sidecar(run["outputs"][kind])
    assert record is not None and record.options["device"] == "cuda"
    model = AutoModelForCausalLM.from_pretrained(run["outputs"][kind], device_map="cuda")
    with torch.no_grad():
        logits = model(torch.arange(1, 17, device="cuda").unsqueeze(0)).logits
    assert torch.isfinite(logits).all()
