"""``quantize --to auto --max-size``: the candidates that fit are made and checked, the lowest KLD is kept.

Real jobs through the CLI: llama.cpp's converter, its dry run and quantizer, the quick check's child.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.artifacts import read_sidecar


def _cli(*args):
    return [sys.executable, "-m", "engine", "quantize", *map(str, args)]


@pytest.mark.slow
def test_budget_between_q4_k_m_and_q8_0_keeps_the_lowest_kld_that_fits(smollm2_dir, smollm2_gguf, tmp_path):
    q4, q8 = smollm2_gguf["Q4_K_M"].stat().st_size, smollm2_gguf["Q8_0"].stat().st_size
    budget = (q4 + q8) // 2
    out = tmp_path / "out"
    proc = subprocess.run(_cli(smollm2_dir, "--to", "auto", "--max-size", f"{budget}B", "--candidates", "2",
                               "--out", out, "--json", "--threads", "2"), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr
    (output,) = json.loads(proc.stdout.splitlines()[-1])["outputs"]
    chosen = out / output["path"].rsplit("/", 1)[-1]
    assert chosen.stat().st_size <= budget
    pick = read_sidecar(chosen).evaluation["autopick"]
    rows = {row["type"]: row for row in pick["candidates"]}
    assert not rows["Q8_0"]["fits"] and rows["Q4_K_M"]["fits"]
    made = [row for row in pick["candidates"] if row.get("made")]
    assert len(made) == 2 and all(row["size_bytes"] <= budget for row in made)
    assert all(isinstance(row["kld_mean"], float) for row in made)
    best = min(made, key=lambda row: row["kld_mean"])
    assert pick["chosen"] == best["type"] and chosen.name == f"smollm2-{best['type']}.gguf"
    assert abs(rows[best["type"]]["size_bytes"] - chosen.stat().st_size) < 32 * 1024  # the dry run's size is exact
    # Only the chosen file (and its sidecar, card and Modelfile) stay: no other candidate, no intermediate.
    assert sorted(p.name for p in out.glob("*.gguf")) == [chosen.name]
    card = (out / "README.md").read_text()
    assert "Chosen for a size budget" in card and f"{best['type']} (chosen)" in card


@pytest.mark.slow
def test_budget_below_the_smallest_candidate_is_one_sentence_and_leaves_nothing(smollm2_gguf, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(_cli(smollm2_gguf["F16"], "--to", "auto", "--max-size", "10MB", "--out", out),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert "smallest candidate" in message and "raise --max-size" in message
    assert not out.exists()


def test_max_size_without_auto_is_refused(tmp_path):
    proc = subprocess.run(_cli(tmp_path, "--to", "Q4_K_M", "--max-size", "4GB", "--out", tmp_path / "o"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--to auto" in proc.stderr


@pytest.mark.slow
def test_time_limit_makes_the_first_candidate_and_reports_the_rest_as_skipped(tiny_nochat_gguf, tmp_path):
    out = tmp_path / "out"  # the tiny model: every candidate fits 1 GB; the time limit is what stops the search
    proc = subprocess.run(_cli(tiny_nochat_gguf, "--to", "auto", "--max-size", "1GB", "--candidates", "3",
                               "--max-minutes", "0.001", "--out", out, "--json", "--threads", "2"),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert any(e["event"] == "warning" and "Time limit reached: 2 candidate(s) skipped." in e["message"]
               for e in events)
    (output,) = events[-1]["outputs"]
    chosen = Path(output["path"])
    assert output["verdict"] and sorted(p.name for p in out.glob("*.gguf")) == [chosen.name]  # made and checked
    pick = read_sidecar(chosen).evaluation["autopick"]
    rows = sorted((row for row in pick["candidates"] if row["fits"]), key=lambda row: -row["size_bytes"])
    assert pick["max_minutes"] == 0.001 and rows[0].get("made") and rows[0]["chosen"]
    assert chosen.name.endswith(f"-{rows[0]['type']}.gguf")  # the largest that fits comes first
    assert [row["skipped"] for row in rows[1:3]] == ["not reached within the time limit of 0.001 min"] * 2
    assert all(row["skipped"] == "only the largest 3 that fit are tried" for row in rows[3:]) and rows[3:]
    assert not any(row.get("made") for row in rows[1:])
    assert "skipped: not reached within the time limit" in (out / "README.md").read_text()


def test_max_minutes_must_be_positive(smollm2_gguf, tmp_path):
    proc = subprocess.run(_cli(smollm2_gguf["F16"], "--to", "auto", "--max-size", "4GB", "--max-minutes", "0",
                               "--out", tmp_path / "o"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "more than 0 minutes" in proc.stderr
    assert not (tmp_path / "o").exists()
