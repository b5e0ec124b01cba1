"""``quantdesk list DIR [--json]`` on real outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.artifacts import update_evaluation, write_sidecar


def _quantdesk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_list_shows_each_output_with_its_source(bnb_smollm2, smollm2_dir):
    done = _quantdesk("list", str(bnb_smollm2.out_dir))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NAME", "FORMAT", "SIZE", "BPW", "SOURCE", "CREATED"]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert rows["smollm2-bnb-nf4"][1] == "hf:bnb-nf4" and rows["smollm2-bnb-int8"][1] == "hf:bnb-int8"
    assert rows["smollm2-bnb-nf4"][5] == "smollm2"
    assert float(rows["smollm2-bnb-nf4"][4]) < float(rows["smollm2-bnb-int8"][4]) < 16
    assert f"source smollm2: {smollm2_dir.resolve()}" in done.stdout


@pytest.mark.slow
def test_list_json_is_the_sidecar_contract(bnb_smollm2, smollm2_dir):
    done = _quantdesk("list", str(bnb_smollm2.out_dir), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["folder"] == str(bnb_smollm2.out_dir.resolve())
    by_name = {a["name"]: a for a in data["artifacts"]}
    assert set(by_name) == {"smollm2-bnb-nf4", "smollm2-bnb-int8"}
    nf4 = by_name["smollm2-bnb-nf4"]
    assert {"path", "kind", "format", "source", "source_name", "source_params", "size_bytes", "options",
            "versions", "created_at", "evaluation", "tracked"} <= set(nf4)
    assert nf4["kind"] == "hf" and nf4["format"] == "hf:bnb-nf4" and nf4["tracked"] is True
    assert nf4["source"] == str(smollm2_dir.resolve())
    assert nf4["options"]["quant_type"] == "nf4" and nf4["versions"]["bitsandbytes"]


def test_list_shows_evaluation_columns_and_untracked_files(tmp_path, tiny_dir):
    q4 = tmp_path / "tiny-Q4_K_M.gguf"
    q4.write_bytes(b"GGUF" + b"\0" * 2044)
    write_sidecar(q4, format="gguf:Q4_K_M", source=tiny_dir)
    update_evaluation(q4, {"ppl": 14.25, "gen_tps": 55.5})
    (tmp_path / "downloaded-Q8_0.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    done = _quantdesk("list", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split()[-2:] == ["PPL", "TOK/S"]
    assert "14.250" in done.stdout and "55.5" in done.stdout
    assert "downloaded" not in done.stdout
    everything = _quantdesk("list", str(tmp_path), "--all", "--json")
    names = {a["name"]: a for a in json.loads(everything.stdout)["artifacts"]}
    assert names["downloaded-Q8_0.gguf"]["tracked"] is False
    assert names["downloaded-Q8_0.gguf"]["format"] == "gguf:Q8_0" and names["downloaded-Q8_0.gguf"]["source"] == ""


def test_list_empty_and_missing_folders(tmp_path):
    empty = _quantdesk("list", str(tmp_path))
    assert empty.returncode == 0 and "No quantized models in" in empty.stdout
    assert json.loads(_quantdesk("list", str(tmp_path), "--json").stdout)["artifacts"] == []
    missing = _quantdesk("list", str(tmp_path / "nope"))
    assert missing.returncode != 0
    assert missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
