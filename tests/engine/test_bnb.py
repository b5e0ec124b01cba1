"""bitsandbytes INT8 / NF4 on CPU with the real smollm2 model: reload, answer, size, refusals, cancel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.artifacts import read_sidecar
from engine.backends import BnbOptions
from engine.backends.bnb.backend import BnbBackend
from engine.backends.bnb.plan import target_for
from engine.errors import JobCancelled, QuantDeskError
from engine.formats import get_format
from engine.fsutil import part_path
from engine.hardware import avx2_from_cpuinfo
from engine.jobs import CancelToken
from tests.fixtures.bnb import run_quantize

QUESTION = "What is the capital of France?"


def _greedy_answer(folder: Path, max_new_tokens: int = 6) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "layer"), [("hf:bnb-nf4", "Linear4bit"), ("hf:bnb-int8", "Linear8bitLt")])
def test_folder_reloads_with_from_pretrained_and_answers_paris(bnb_smollm2, fmt, layer):
    from transformers import AutoModelForCausalLM

    folder = bnb_smollm2.outputs[fmt]
    assert folder.name == f"smollm2-{fmt.split(':')[1]}"
    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu")
    assert sum(type(m).__name__ == layer for m in model.modules()) == 30 * 7  # every projection of 30 layers
    del model
    assert "Paris" in _greedy_answer(folder)


@pytest.mark.slow
def test_nf4_folder_is_under_0_6_of_the_bf16_checkpoint(bnb_smollm2, smollm2_dir):
    from engine.artifacts import size_on_disk

    nf4 = size_on_disk(bnb_smollm2.outputs["hf:bnb-nf4"])
    assert nf4 < 0.6 * size_on_disk(smollm2_dir)
    int8 = size_on_disk(bnb_smollm2.outputs["hf:bnb-int8"])
    assert nf4 < int8 < size_on_disk(smollm2_dir)


@pytest.mark.slow
def test_folder_carries_tokenizer_template_generation_config_card_and_sidecar(bnb_smollm2, smollm2_dir):
    for fmt, folder in bnb_smollm2.outputs.items():
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "chat_template.jinja", "README.md", "model.safetensors"} <= names
        config = json.loads((folder / "config.json").read_text())
        assert config["quantization_config"]["quant_method"] == "bitsandbytes"
        card = (folder / "README.md").read_text()
        assert "from_pretrained" in card and "smollm2" in card
        record = read_sidecar(folder)
        assert record is not None and record.format == fmt
        assert record.source == str(smollm2_dir.resolve()) and record.source_name == "smollm2"
        assert record.size_bytes > 0 and record.source_params == 134_515_008
        assert {"quantdesk", "torch", "transformers", "bitsandbytes"} <= set(record.versions)
        assert record.options["device"] == "cpu"
        assert record.options["dtype"] == ("float16" if fmt == "hf:bnb-int8" else "bfloat16")
    nf4 = read_sidecar(bnb_smollm2.outputs["hf:bnb-nf4"]).options
    assert nf4["double_quant"] is True and nf4["quant_type"] == "nf4" and nf4["compute_dtype"] == "bfloat16"


@pytest.mark.slow
def test_progress_reports_loading_quantizing_saving_verifying(bnb_smollm2):
    events = bnb_smollm2.events
    steps = [e.step for e in events]
    assert steps[0] == "warning" and "slow" in events[0].message
    for step in ("loading", "quantizing", "saving", "verifying"):
        assert step in steps
    quantizing = [e for e in events if e.step == "quantizing"]
    assert any(e.tensor_name and "self_attn" in e.tensor_name for e in quantizing)
    assert quantizing[-1].tensor_index == quantizing[-1].tensor_count
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert not list(bnb_smollm2.out_dir.glob("*.quantdesk-part"))


def test_already_quantized_source_is_refused(bnb_smollm2, tmp_path):
    with pytest.raises(QuantDeskError, match="already quantized with bitsandbytes .*point to the original"):
        run_quantize(bnb_smollm2.outputs["hf:bnb-nf4"], "bnb-int8", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_gguf_file_source_is_refused(tmp_path):
    gguf = tmp_path / "model-F16.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(QuantDeskError, match="is a GGUF file; bitsandbytes needs the original Hugging Face"):
        run_quantize(gguf, "bnb-nf4", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unwritable_output_folder_is_refused_before_anything_is_loaded(tiny_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(QuantDeskError, match="choose another folder"):
        run_quantize(tiny_dir, "bnb-nf4", blocker / "out")
    assert blocker.read_text() == "not a folder"


def test_folder_not_made_by_quantdesk_is_not_overwritten(tiny_dir, tmp_path):
    out = tmp_path / "out"
    (out / "tiny-bnb-nf4").mkdir(parents=True)
    (out / "tiny-bnb-nf4" / "notes.txt").write_text("mine")
    with pytest.raises(QuantDeskError, match="already exists and was not made by QuantDesk"):
        run_quantize(tiny_dir, "bnb-nf4", out)
    assert (out / "tiny-bnb-nf4" / "notes.txt").read_text() == "mine"


def test_cuda_without_gpu_is_refused_before_anything_is_loaded(tiny_dir, tmp_path):
    from engine.hardware import detect_gpus

    if detect_gpus():
        pytest.skip("this machine has an NVIDIA GPU")
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from engine.backends import QuantizeRequest\n"
        "from engine.errors import QuantDeskError\n"
        "from engine.formats import parse_targets\n"
        "from engine.quantize import preflight\n"
        "start = time.monotonic()\n"
        f"req = QuantizeRequest(Path({str(tiny_dir)!r}), parse_targets('bnb-nf4'), Path({str(tmp_path / 'out')!r}),"
        " device='cuda')\n"
        "try:\n    preflight(req)\nexcept QuantDeskError as err:\n    print('ERROR', err)\n"
        "print('SECONDS', time.monotonic() - start)\n"
        "print('HEAVY', [m for m in ('torch', 'transformers', 'bitsandbytes') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ERROR CUDA was asked for, but this machine has no NVIDIA GPU" in out
    assert "choose --device cpu" in out
    assert "HEAVY []" in out
    assert float(out.split("SECONDS")[1].split()[0]) < 2.0
    assert not (tmp_path / "out").exists()


def test_cancel_mid_job_leaves_no_folder(tiny_dir, tmp_path):
    """Cancel while the second target is being verified: the first (FP4, no double quantization,
    already verified in the child) and the second are both written under QuantDesk's temporary names, and both
    must go."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    cancel = CancelToken()
    seen: list[str] = []

    def on_progress(event):
        seen.append(event.step)
        if event.step == "verifying" and event.extra.get("format") == "hf:bnb-int8" and not cancel.cancelled:
            assert (part_path(out / "tiny-bnb-fp4") / "model.safetensors").is_file()
            assert (part_path(out / "tiny-bnb-int8") / "model.safetensors").is_file()
            cancel.cancel()

    with pytest.raises(JobCancelled):
        run_quantize(tiny_dir, "bnb-nf4,bnb-int8", out, cancel=cancel, on_progress=on_progress,
                     options={"bnb_quant_type": "fp4", "bnb_double_quant": False, "bnb_compute_dtype": "fp32"})
    assert cancel.cancelled and "saving" in seen
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_missing_package_names_the_exact_pip_command():
    class NeedsMissing(BnbBackend):
        required_packages = (("quantdesk_absent_pkg", "quantdesk-absent-pkg>=1.0"),)

    with pytest.raises(QuantDeskError, match=r'install with: pip install -U "quantdesk-absent-pkg>=1.0"$'):
        NeedsMissing().validate_environment()
    assert BnbBackend().install_hint() is None  # everything is installed here


def test_avx2_is_read_from_cpuinfo():
    assert avx2_from_cpuinfo("processor: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n") is True
    assert avx2_from_cpuinfo("processor: 0\nflags\t\t: fpu sse sse2 avx fma\n") is False
    assert avx2_from_cpuinfo("Hardware: something\n") is None


def test_nf4_options_map_to_bitsandbytes_config():
    nf4 = get_format("bnb-nf4")
    default = target_for(nf4)
    assert default.bnb_config == {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                  "bnb_4bit_use_double_quant": True, "bnb_4bit_compute_dtype": "bfloat16"}
    fp4 = target_for(nf4, BnbOptions(quant_type="fp4", compute_dtype="fp32", double_quant=False))
    assert fp4.suffix == "bnb-fp4" and fp4.folder_name(Path("m")) == "m-bnb-fp4"
    assert fp4.bnb_config["bnb_4bit_compute_dtype"] == "float32"
    assert fp4.bnb_config["bnb_4bit_use_double_quant"] is False
    assert target_for(get_format("bnb-int8")).bnb_config == {"load_in_8bit": True, "llm_int8_threshold": 6.0}
    with pytest.raises(QuantDeskError, match="choose bf16, fp16 or fp32"):
        target_for(nf4, BnbOptions(compute_dtype="int3"))
    with pytest.raises(QuantDeskError, match="choose nf4 or fp4"):
        target_for(nf4, BnbOptions(quant_type="nf5"))


@pytest.mark.gpu
def test_cuda_nf4_reloads_on_the_gpu(tiny_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    outputs = run_quantize(tiny_dir, "bnb-nf4,bnb-int8", tmp_path, device="cuda")
    for output in outputs:
        assert read_sidecar(output.path).options["device"] == "cuda"
        model = AutoModelForCausalLM.from_pretrained(output.path, device_map="cuda")
        with torch.no_grad():
            logits = model(torch.tensor([[1, 2, 3, 4]], device="cuda")).logits
        assert torch.isfinite(logits).all()


def test_source_folder_is_left_untouched(tiny_dir, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(tiny_dir, source)
    (source / "config.json").write_text(
        json.dumps({**json.loads((source / "config.json").read_text()),
                    "quantization_config": {"quant_method": "gptq"}})
    )
    before = {p.name: p.stat().st_mtime_ns for p in source.iterdir()}
    with pytest.raises(QuantDeskError, match="already quantized with gptq"):
        run_quantize(source, "bnb-nf4", tmp_path / "out")
    assert {p.name: p.stat().st_mtime_ns for p in source.iterdir()} == before
