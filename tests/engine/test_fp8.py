"""FP8 E4M3 (compressed-tensors FP8_DYNAMIC) on CPU with the real smollm2 model: reload, answer, size, verify, cancel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.artifacts import read_sidecar, size_on_disk
from engine.errors import JobCancelled, QuantDeskError
from engine.fsutil import part_path
from engine.inspect import safetensors_tensors
from engine.jobs import CancelToken
from tests.fixtures.quantize import run_quantize


@pytest.fixture(scope="module")
def fp8_smollm2(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """smollm2 → fp8 on CPU, one job for the whole module (about 40 s on two idle cores)."""
    return run_quantize(smollm2_dir, "fp8", tmp_path_factory.mktemp("fp8-smollm2"), device="cpu")


@pytest.mark.slow
def test_folder_reloads_with_plain_transformers_and_gives_finite_logits(fp8_smollm2):
    import torch
    from transformers import AutoModelForCausalLM

    folder = fp8_smollm2["outputs"]["fp8"]
    assert folder.name == "smollm2-fp8-dynamic"
    quant = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors" and quant["format"] == "float-quantized"
    assert quant["ignore"] == ["lm_head"]
    group = quant["config_groups"]["group_0"]
    assert group["weights"]["strategy"] == "channel" and group["input_activations"]["dynamic"] is True
    dtypes = {name: dtype for name, dtype, _n, _b in safetensors_tensors(folder / "model.safetensors")}
    assert dtypes["model.layers.0.mlp.down_proj.weight"] == "F8_E4M3"
    assert sum(d == "F8_E4M3" for d in dtypes.values()) == 30 * 7  # every projection of 30 layers

    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu")
    assert sum(hasattr(m, "quantization_scheme") for m in model.modules()) == 30 * 7
    with torch.no_grad():
        logits = model(torch.tensor([[1, 504, 3458, 282, 4649, 314]])).logits
    assert torch.isfinite(logits).all()


@pytest.mark.slow
def test_chat_on_the_cpu_answers_paris_like_the_original(fp8_smollm2):
    """transformers runs FP8 on a CPU (it expands the weights to 16 bits), so QuantDesk's chat works there."""
    from engine.evaluate.quick_check import greedy_answers

    answer = greedy_answers(fp8_smollm2["outputs"]["fp8"], ("What is the capital of France?",), device="cpu",
                            threads=None)[0]
    assert "Paris" in answer  # the bf16 original answers "The capital of France is Paris."


@pytest.mark.slow
def test_folder_is_about_0_6_of_the_bf16_checkpoint(fp8_smollm2, smollm2_dir):
    """Projections shrink to half; smollm2's tied 16-bit embedding (21 % of its weights) does not: 0.61 measured."""
    ratio = size_on_disk(fp8_smollm2["outputs"]["fp8"]) / size_on_disk(smollm2_dir)
    assert 0.55 < ratio < 0.65


@pytest.mark.slow
def test_progress_card_and_sidecar(fp8_smollm2, smollm2_dir):
    events = fp8_smollm2["events"]
    steps = [e.step for e in events]
    firsts = [s for i, s in enumerate(steps) if s in ("loading", "quantizing", "saving", "verifying")
              and s not in steps[:i]]
    assert firsts == ["loading", "quantizing", "saving", "verifying"]
    per_tensor = [e for e in events if e.step == "quantizing" and e.tensor_name]
    assert per_tensor[-1].tensor_count == 272 and per_tensor[-1].tensor_index == 272
    folder = fp8_smollm2["outputs"]["fp8"]
    card = (folder / "README.md").read_text()
    assert "vllm serve smollm2-fp8-dynamic" in card and "Hopper" in card and "Ada" in card
    record = read_sidecar(folder)
    assert record.format == "hf:fp8" and record.source_name == "smollm2"
    assert record.options["scheme"] == "FP8_DYNAMIC" and record.options["quantized_modules"] == 210
    assert record.versions["compressed-tensors"]
    assert not list(fp8_smollm2["out_dir"].glob("*.quantdesk-part"))


@pytest.mark.slow
def test_verify_fails_loudly_on_a_truncated_shard(fp8_smollm2, tmp_path):
    from engine.backends.fp8.worker import verify_folder

    damaged = tmp_path / "damaged"
    shutil.copytree(fp8_smollm2["outputs"]["fp8"], damaged)
    weights = damaged / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(QuantDeskError) as err:
        verify_folder(damaged)
    text = str(err.value)
    assert text.startswith("The FP8 model damaged does not reload") and "nothing was kept" in text
    assert "\n" not in text


def test_cancel_mid_job_leaves_nothing(tiny_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    cancel = CancelToken()

    def on_progress(event):
        if event.step == "quantizing" and (event.tensor_index or 0) >= 5 and not cancel.cancelled:
            assert part_path(out / "tiny-fp8-dynamic").is_dir()
            cancel.cancel()

    with pytest.raises(JobCancelled):
        run_quantize(tiny_dir, "fp8", out, cancel=cancel, on_progress=on_progress, device="cpu")
    assert cancel.cancelled
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_already_quantized_source_and_bin_only_source_are_refused(tmp_path, smollm2_dir):
    from engine.backends.fp8.plan import read_source

    quantized = tmp_path / "q"
    quantized.mkdir()
    (quantized / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gptq"}}))
    with pytest.raises(QuantDeskError, match="already quantized with gptq"):
        read_source(quantized)
    pickles = tmp_path / "p"
    pickles.mkdir()
    shutil.copy(smollm2_dir / "config.json", pickles / "config.json")
    (pickles / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(QuantDeskError, match=r"only PyTorch \.bin weights.*download the model's \.safetensors"):
        read_source(pickles)


def test_registry_finds_fp8_and_a_missing_package_names_the_pip_command():
    from engine.backends.fp8.backend import Fp8Backend
    from engine.backends.registry import backend_for
    from engine.formats import get_format

    assert isinstance(backend_for(get_format("fp8")), Fp8Backend)

    class NeedsMissing(Fp8Backend):
        required_packages = (("quantdesk_absent_pkg", "compressed-tensors>=99"),)

    with pytest.raises(QuantDeskError, match=r'install with: pip install -U "compressed-tensors>=99"$'):
        NeedsMissing().validate_environment()
    assert Fp8Backend().install_hint() is None  # everything is installed here
