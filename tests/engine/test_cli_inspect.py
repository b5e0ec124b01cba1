"""The doctor / inspect / recommend commands as a user runs them: JSON contracts, tables, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.cli import main
from tests.engine.test_inspect import _bad_inputs


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_inspect_smollm2_reports_its_parameter_count(smollm2_dir):
    out = subprocess.run([sys.executable, "-m", "engine", "inspect", str(smollm2_dir), "--json"],
                         capture_output=True, text=True, check=True).stdout
    d = json.loads(out)
    assert d["parameters"] == 134_515_008
    assert {k: d[k] for k in ("kind", "architecture", "context_length", "layers", "kv_heads", "head_dim",
                              "has_chat_template", "gguf_convertible")} == {
        "kind": "hf", "architecture": "LlamaForCausalLM", "context_length": 8192, "layers": 30, "kv_heads": 3,
        "head_dim": 64, "has_chat_template": True, "gguf_convertible": True}


def test_inspect_table(capsys, smollm2_dir):
    assert main(["inspect", str(smollm2_dir)]) == 0
    out = capsys.readouterr().out
    assert "134,515,008" in out and "LlamaForCausalLM" in out
    lines = out.splitlines()
    column = lines[0].index(str(smollm2_dir))
    assert all(line[column - 2 : column] == "  " for line in lines)  # values line up


def test_inspect_gguf_json(capsys, tiny_gguf):
    d = _json(capsys, ["inspect", str(tiny_gguf), "--json"])
    assert d["kind"] == "gguf" and d["architecture"] == "llama" and d["has_chat_template"] is True


def test_doctor_json_contract(capsys):
    d = _json(capsys, ["doctor", "--json"])
    assert d["cpu"]["logical_cores"] >= 1 and d["ram"]["total_bytes"] >= d["ram"]["available_bytes"] > 0
    assert isinstance(d["gpus"], list) and isinstance(d["llama_gpu_offload"], bool)
    for gpu in d["gpus"]:
        assert {"name", "compute_capability", "vram_total_bytes", "vram_free_bytes"} <= set(gpu)


def test_doctor_plans_a_card(capsys):
    d = _json(capsys, ["doctor", "--json", "--gpu", "RTX 3060", "--ram", "16G"])
    assert d["gpus"][0]["name"] == "RTX 3060" and d["gpus"][0]["compute_capability"] == "8.6"
    assert d["ram"]["total_bytes"] == 16 * 1024**3 and d["overrides"] == {"ram": "16G", "gpu": "RTX 3060"}
    assert main(["doctor"]) == 0
    assert "llama.cpp" in capsys.readouterr().out


@pytest.mark.parametrize(("size", "vram"), [("16GiB", 16 * 1024**3), ("16G", 16 * 1024**3), ("16000MB", 16 * 10**9)])
def test_recommend_json_contract_and_sizes(capsys, model_config, size, vram):
    d = _json(capsys, ["recommend", str(model_config("llama-2-7b")), "--gpu", "RTX 3090", "--vram", size,
                       "--ram", "32GiB", "--json"])
    assert d["context"] == 4096 and d["machine"]["vram_total_bytes"] == vram
    assert d["options"][0]["format"] == "hf:bnb-int8"  # 16 GB sits between FP16 and twice FP16
    for o in d["options"]:
        assert {"format", "size_bytes", "peak_bytes", "device", "fit", "why"} <= set(o)


def test_recommend_flags(capsys, model_config, smollm2_dir):
    d = _json(capsys, ["recommend", str(model_config("llama-3-70b")), "--gpu", "H100", "--json"])
    assert d["options"][0]["format"] == "hf:fp8"
    d = _json(capsys, ["recommend", str(model_config("llama-2-7b")), "--cpu-only", "--ram", "16GiB", "--json"])
    assert d["options"][0]["format"] == "gguf:Q4_K_M"
    d = _json(capsys, ["recommend", str(smollm2_dir), "--cpu-only", "--ctx", "1024", "--json"])
    assert d["context"] == 1024 and d["options"][0]["format"] == "gguf:Q8_0"


def test_recommend_table(capsys, model_config):
    assert main(["recommend", str(model_config("llama-2-7b")), "--vram", "2GiB", "--ram", "16GiB"]) == 0
    out = capsys.readouterr().out
    assert "planning for 4,096 tokens" in out and "gguf:Q4_K_M" in out and "split" in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("#"))
    assert header.split() == ["#", "format", "size", "peak", "where", "fit", "ready"]


@pytest.mark.parametrize(
    "argv",
    [["recommend", "{cfg}", "--ram", "lots"], ["recommend", "{cfg}", "--gpu", "Mystery 9000"],
     ["recommend", "{cfg}", "--ctx", "0"], ["doctor", "--vram", "0G"]],
)
def test_bad_flags_are_one_line(capsys, model_config, argv):
    argv = [a.replace("{cfg}", str(model_config("llama-2-7b"))) for a in argv]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("quantdesk: error: ") and "Traceback" not in err


def test_every_bad_model_is_one_line_on_stderr(capsys, tmp_path, tiny_dir):
    for path, pattern in _bad_inputs(tmp_path, tiny_dir):
        for command in ("inspect", "recommend"):
            assert main([command, str(path)]) != 0, path
            captured = capsys.readouterr()
            assert captured.out == ""
            assert captured.err.count("\n") == 1 and pattern.split()[0] in captured.err, captured.err


def test_bad_model_from_a_real_shell(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "engine", "inspect", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "not valid JSON" in proc.stderr and "Traceback" not in proc.stderr


def test_inspect_and_recommend_stay_light(smollm2_dir):
    """The window asks these on every model it opens: no torch, transformers or llama_cpp."""
    code = (
        "import sys, io, contextlib\n"
        "from engine.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rc = main(['inspect', {str(smollm2_dir)!r}, '--json'])\n"
        f"    rc += main(['recommend', {str(smollm2_dir)!r}, '--gpu', 'RTX 4090', '--json'])\n"
        "print(rc, [m for m in ('torch', 'transformers', 'llama_cpp', 'bitsandbytes') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0 []"


def test_inspect_tables_for_config_and_gguf(capsys, model_config, tiny_gguf):
    assert main(["inspect", str(model_config("mistral-7b"))]) == 0
    out = capsys.readouterr().out
    assert "estimated from config.json" in out and "4,096 tokens on 32 layers" in out
    assert main(["inspect", str(tiny_gguf)]) == 0
    out = capsys.readouterr().out
    assert "GGUF file" in out and "GGUF convertible" not in out
