"""The compare table reads every output of one source from its sidecar."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from engine.artifacts import update_evaluation, write_sidecar
from engine.errors import QuantDeskError
from engine.evaluate.compare import compare_rows, find_artifacts, format_table

PARAMS = 134_515_008  # smollm2


@pytest.fixture
def outputs(chat_ggufs, smollm2_dir, tmp_path):
    """Three smollm2 GGUFs in an output folder, with sidecars naming smollm2 as their source."""
    out = tmp_path / "out"
    out.mkdir()
    paths = {}
    for name in ("F16", "Q8_0", "Q4_K_M"):
        path = out / f"smollm2-{name}.gguf"
        path.symlink_to(chat_ggufs[name])
        write_sidecar(path, format=f"gguf:{name}", source=smollm2_dir)
        paths[name] = path
    measured = {"F16": 20.0, "Q8_0": 20.1, "Q4_K_M": 21.5}
    for name, ppl in measured.items():
        results = {"ppl": ppl, "text": "built-in texts", "n_ctx": 512, "gen_tps": 50.0}
        if name != "F16":
            results.update(kld_mean=0.01 if name == "Q8_0" else 0.08)
        update_evaluation(paths[name], results)
    return out, paths


def test_rows_compute_bits_per_weight_and_delta_ppl(outputs, chat_ggufs):
    out, paths = outputs
    rows = {r.format: r for r in compare_rows(find_artifacts(out))}
    assert list(rows) == ["gguf:F16", "gguf:Q8_0", "gguf:Q4_K_M"]  # largest first
    q4 = rows["gguf:Q4_K_M"]
    assert q4.bits_per_weight == pytest.approx(chat_ggufs["Q4_K_M"].stat().st_size * 8 / PARAMS)
    assert 4.5 < q4.bits_per_weight < 7.5 and 15.5 < rows["gguf:F16"].bits_per_weight < 16.5
    assert q4.delta_ppl == pytest.approx(1.5) and rows["gguf:Q8_0"].delta_ppl == pytest.approx(0.1)
    assert rows["gguf:F16"].delta_ppl == 0 and rows["gguf:F16"].kld_mean is None
    table = format_table(list(rows.values()))
    assert "ΔPPL" in table and "+1.5000" in table and "smollm2-Q4_K_M.gguf" in table


def test_source_finds_its_outputs_in_a_sibling_folder(chat_ggufs, smollm2_dir, tmp_path):
    src = tmp_path / "smollm2"
    src.mkdir()
    shutil.copy(smollm2_dir / "config.json", src)
    out = tmp_path / "quantized"
    out.mkdir()
    for name in ("Q8_0", "Q4_K_M"):
        path = out / f"smollm2-{name}.gguf"
        path.symlink_to(chat_ggufs[name])
        write_sidecar(path, format=f"gguf:{name}", source=src)
    stranger = out / "other-F16.gguf"
    stranger.symlink_to(chat_ggufs["F16"])
    write_sidecar(stranger, format="gguf:F16", source=tmp_path / "another-model")
    assert [a.path.name for a in find_artifacts(src)] == ["smollm2-Q8_0.gguf", "smollm2-Q4_K_M.gguf"]
    lonely = tmp_path / "lonely-model"
    lonely.mkdir()
    with pytest.raises(QuantDeskError, match="No QuantDesk outputs found"):
        find_artifacts(lonely)


def test_cli_compare_table_and_json(outputs):
    out, _ = outputs
    table = subprocess.run([sys.executable, "-m", "engine", "compare", str(out)], capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["artifact", "format", "size", "bpw"] and len(lines) == 5
    as_json = subprocess.run([sys.executable, "-m", "engine", "compare", str(out), "--json"],
                             capture_output=True, text=True)
    rows = json.loads(as_json.stdout)
    assert [r["format"] for r in rows] == ["gguf:F16", "gguf:Q8_0", "gguf:Q4_K_M"]
    missing = subprocess.run([sys.executable, "-m", "engine", "compare", str(out / "nothing")],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_original_row_shows_the_ppl_measured_as_a_base(outputs, smollm2_dir):
    from engine.artifacts import describe

    out, paths = outputs
    update_evaluation(paths["Q8_0"], {"base": str(smollm2_dir.resolve()), "base_ppl": 19.9})
    original = describe(smollm2_dir)
    rows = compare_rows([original, *find_artifacts(out)])
    assert rows[0].path == str(smollm2_dir) and rows[0].ppl == pytest.approx(19.9)
    # Without the KLD run that measured it, the original has no PPL.
    update_evaluation(paths["Q8_0"], {"base": None, "base_ppl": None})
    assert compare_rows([original, *find_artifacts(out)])[0].ppl is None


def test_delta_ppl_uses_the_original_scores_cached_beside_the_outputs(chat_ggufs, smollm2_dir, tmp_path):
    import math

    import numpy as np

    from engine.evaluate.perplexity import OriginalRun
    from engine.evaluate.reference import ReferenceCache, cache_dir_for, reference_key
    from engine.evaluate.texts import default_text

    out = tmp_path / "out"
    out.mkdir()
    q8 = out / "smollm2-Q8_0.gguf"
    q8.symlink_to(chat_ggufs["Q8_0"])
    write_sidecar(q8, format="gguf:Q8_0", source=smollm2_dir)
    update_evaluation(q8, {"ppl": 20.1, "text": "built-in texts", "n_ctx": 512})
    assert compare_rows(find_artifacts(out))[0].delta_ppl is None  # no original measured, nothing cached

    rows = 512 - 256 - 1  # one chunk's scored tokens
    run = OriginalRun(chunks=[[1] * 512], top_ids=np.zeros((rows, 4), dtype=np.uint16),
                      top_lp=np.full((rows, 4), -1.0, dtype=np.float32),
                      nll=np.full(rows, math.log(19.0), dtype=np.float32), n_vocab=49152, n_ctx=512)
    key = reference_key(smollm2_dir, default_text(), 512, None, "cpu")
    assert ReferenceCache(cache_dir_for(q8)).save(key, run) is not None
    row = compare_rows(find_artifacts(out))[0]
    assert row.base_from_cache and row.delta_ppl == pytest.approx(1.1, abs=1e-4)

    update_evaluation(q8, {"text": "notes.txt"})  # a text the sidecar cannot rebuild: no guess
    assert compare_rows(find_artifacts(out))[0].delta_ppl is None
