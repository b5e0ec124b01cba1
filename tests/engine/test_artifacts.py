"""The artifact library: sidecars beside every output, listing a folder, which source each came from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from engine.artifacts import (
    SIDECAR_SUFFIX,
    artifacts_by_source,
    artifacts_of,
    delete_artifact,
    describe,
    guess_format,
    list_artifacts,
    read_sidecar,
    sidecar_path,
    update_evaluation,
    write_sidecar,
)


def _gguf(folder: Path, name: str, size: int = 1000) -> Path:
    path = folder / name
    path.write_bytes(b"GGUF" + b"\0" * (size - 4))
    return path


def test_sidecar_records_source_format_options_size_versions_and_time(tmp_path, tiny_dir):
    out = _gguf(tmp_path, "tiny-Q4_K_M.gguf", 4096)
    record = write_sidecar(out, format="gguf:Q4_K_M", source=tiny_dir, options={"threads": 2},
                           versions={"llama.cpp": "b1234"}, source_params=1000)
    assert sidecar_path(out) == tmp_path / ("tiny-Q4_K_M.gguf" + SIDECAR_SUFFIX)
    data = json.loads(sidecar_path(out).read_text())
    assert data["schema"] == 1
    assert data["source"] == str(tiny_dir.resolve()) and data["source_name"] == "tiny"
    assert data["format"] == "gguf:Q4_K_M" and data["kind"] == "gguf"
    assert data["size_bytes"] == 4096 and data["options"] == {"threads": 2}
    assert data["versions"]["llama.cpp"] == "b1234" and "quantdesk" in data["versions"]
    assert data["created_at"].endswith("+00:00") and data["evaluation"] == {}
    again = read_sidecar(out)
    assert again == record
    assert again.bits_per_weight == 4096 * 8 / 1000
    assert again.format_label == "GGUF Q4_K_M"


def test_evaluation_results_merge_into_the_sidecar(tmp_path, tiny_dir):
    out = _gguf(tmp_path, "tiny-Q8_0.gguf")
    write_sidecar(out, format="gguf:Q8_0", source=tiny_dir)
    update_evaluation(out, {"ppl": 12.5, "ppl_stderr": 0.3})
    update_evaluation(out, {"gen_tps": 40.0})
    record = read_sidecar(out)
    assert record.evaluation == {"ppl": 12.5, "ppl_stderr": 0.3, "gen_tps": 40.0}
    assert record.format == "gguf:Q8_0" and record.source == str(tiny_dir.resolve())


def test_evaluating_an_output_without_sidecar_creates_one(tmp_path):
    out = _gguf(tmp_path, "downloaded-Q6_K.gguf")
    record = update_evaluation(out, {"ppl": 9.0})
    assert record.format == "gguf:Q6_K" and record.source == ""
    assert read_sidecar(out).evaluation == {"ppl": 9.0}


def test_list_tells_which_source_each_came_from(tmp_path, tiny_dir, smollm2_dir):
    a = _gguf(tmp_path, "tiny-Q4_K_M.gguf")
    b = _gguf(tmp_path, "smollm2-Q8_0.gguf")
    hf = tmp_path / "tiny-bnb-nf4"
    shutil.copytree(tiny_dir, hf)
    write_sidecar(a, format="gguf:Q4_K_M", source=tiny_dir)
    write_sidecar(b, format="gguf:Q8_0", source=smollm2_dir)
    write_sidecar(hf, format="hf:bnb-nf4", source=tiny_dir)
    listed = list_artifacts(tmp_path)
    assert [x.name for x in listed] == ["smollm2-Q8_0.gguf", "tiny-Q4_K_M.gguf", "tiny-bnb-nf4"]
    assert {x.name: x.source_name for x in listed} == {
        "smollm2-Q8_0.gguf": "smollm2", "tiny-Q4_K_M.gguf": "tiny", "tiny-bnb-nf4": "tiny"}
    assert listed[2].kind == "hf" and listed[2].size_bytes > 1_000_000
    groups = artifacts_by_source(tmp_path)
    assert sorted(x.name for x in groups[str(tiny_dir.resolve())]) == ["tiny-Q4_K_M.gguf", "tiny-bnb-nf4"]
    assert [x.name for x in artifacts_of(smollm2_dir, tmp_path)] == ["smollm2-Q8_0.gguf"]


def test_list_skips_missing_corrupt_and_partial_outputs(tmp_path, tiny_dir):
    gone = _gguf(tmp_path, "gone-Q4_K_M.gguf")
    write_sidecar(gone, format="gguf:Q4_K_M", source=tiny_dir)
    gone.unlink()  # the user deleted the file: its sidecar is an orphan
    broken = _gguf(tmp_path, "broken-Q4_K_M.gguf")
    sidecar_path(broken).write_text("{not json")
    _gguf(tmp_path, "half-Q4_K_M.gguf.part")
    assert list_artifacts(tmp_path) == []
    untracked = list_artifacts(tmp_path, include_untracked=True)
    assert [(x.name, x.tracked, x.format) for x in untracked] == [("broken-Q4_K_M.gguf", False, "gguf:Q4_K_M")]
    assert list_artifacts(tmp_path / "nowhere") == []


def test_untracked_outputs_are_recognised_from_the_files_themselves(tmp_path, tiny_dir):
    plain = tmp_path / "tiny"
    shutil.copytree(tiny_dir, plain)
    bnb = tmp_path / "other-bnb-int8"
    shutil.copytree(tiny_dir, bnb)
    config = json.loads((bnb / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (bnb / "config.json").write_text(json.dumps(config))
    (tmp_path / "notes").mkdir()
    _gguf(tmp_path, "model.Q5_K_M.gguf")
    assert guess_format(plain) == "hf:fp16"
    assert guess_format(bnb) == "hf:bnb-int8"
    assert guess_format(tmp_path / "model.Q5_K_M.gguf") == "gguf:Q5_K_M"
    found = {x.name: x.format for x in list_artifacts(tmp_path, include_untracked=True)}
    assert found == {"tiny": "hf:fp16", "other-bnb-int8": "hf:bnb-int8", "model.Q5_K_M.gguf": "gguf:Q5_K_M"}
    assert describe(tmp_path / "notes") is None


def test_delete_removes_output_and_sidecar(tmp_path, tiny_dir):
    hf = tmp_path / "tiny-bnb-nf4"
    shutil.copytree(tiny_dir, hf)
    write_sidecar(hf, format="hf:bnb-nf4", source=tiny_dir)
    delete_artifact(hf)
    assert list(tmp_path.iterdir()) == []


def test_sidecar_from_an_older_or_newer_schema_still_reads(tmp_path):
    out = _gguf(tmp_path, "x-Q4_0.gguf", 2000)
    sidecar_path(out).write_text(json.dumps({"format": "gguf:Q4_0", "source": "/models/x", "size_bytes": 2000,
                                             "some_future_key": [1, 2]}))
    record = read_sidecar(out)
    assert record.format == "gguf:Q4_0" and record.source_name == "x" and record.evaluation == {}
