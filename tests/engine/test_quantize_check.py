"""The quick check after a quantize job: on by default, off with --no-check, never at the outputs' cost.

Real jobs: llama.cpp's quantizer, the check's child process, the CLI as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.artifacts import read_sidecar
from engine.errors import QuantDeskError
from engine.jobs import CancelToken
from tests.fixtures.quantize import run_quantize

pytestmark = pytest.mark.slow


def _cli(*args):
    return [sys.executable, "-m", "engine", *map(str, args)]


def test_cli_job_checks_q8_0_and_list_compare_and_card_show_the_verdict(smollm2_gguf, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(_cli("quantize", smollm2_gguf["F16"], "--to", "Q8_0", "--out", out, "--json",
                               "--threads", "2"), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    steps = [e.get("step") for e in events if e["event"] == "progress"]
    assert "check" in steps and "answers" in steps and steps.index("check") > steps.index("quantize")
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert not [e for e in events if e["event"] == "warning"]
    (output,) = events[-1]["outputs"]
    assert output["verdict"] in ("near-lossless", "small loss"), output["verdict_evidence"]
    assert output["verdict_evidence"].startswith("Q8_0: same top token")
    q8 = out / "smollm2-Q8_0.gguf"
    assert read_sidecar(q8).evaluation["verdict"] == output["verdict"]

    listed = subprocess.run(_cli("list", out), capture_output=True, text=True, timeout=120)
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[-1] == "VERDICT" and row.endswith(output["verdict"])

    compared = subprocess.run(_cli("compare", out), capture_output=True, text=True, timeout=120)
    first = compared.stdout.splitlines()[0]
    assert first.startswith("Keep Q8_0: ") and "% smaller than the original" in first, compared.stdout
    saving = int(first.split(": ", 1)[1].split("%", 1)[0])
    assert saving == round(100 * (1 - q8.stat().st_size / smollm2_gguf["F16"].stat().st_size))
    assert "verdict" in compared.stdout.splitlines()[2] and output["verdict"] in compared.stdout
    as_json = json.loads(subprocess.run(_cli("compare", out, "--json"), capture_output=True, text=True,
                                        timeout=120).stdout)
    assert as_json[0]["verdict"] == output["verdict"] and as_json[0]["check_delta_ppl_pct"] is not None

    card = (out / "README.md").read_text(encoding="utf-8")
    assert "Quality check |" in card and f"**{output['verdict']}** — Q8_0: same top token" in card


def test_no_check_runs_none(smollm2_gguf, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(_cli("quantize", smollm2_gguf["F16"], "--to", "Q4_0", "--out", out, "--json",
                               "--threads", "2", "--no-check"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert not {"check", "answers", "original", "perplexity"} & {e.get("step") for e in events}
    (output,) = events[-1]["outputs"]
    assert output["verdict"] is None and output["verdict_evidence"] is None
    assert "verdict" not in read_sidecar(out / "smollm2-Q4_0.gguf").evaluation
    assert not (out / ".quantdesk-eval-cache").exists()


def test_a_failed_check_keeps_the_outputs_and_warns(chat_ggufs, tmp_path):
    source = tmp_path / "src" / "model-F16.gguf"
    source.parent.mkdir()
    source.symlink_to(chat_ggufs["F16"])
    moved = tmp_path / "src" / "moved.gguf"

    def on_progress(event):
        if event.step == "verify" and source.is_symlink():  # the source goes away before the check
            source.rename(moved)

    job = run_quantize(source, "Q8_0", tmp_path / "out", on_progress=on_progress, check=True, threads=2)
    warnings = [e.message for e in job["events"] if e.step == "warning"]
    assert len(warnings) == 1 and "Could not check the quality of model-Q8_0.gguf" in warnings[0]
    assert "does not exist" in warnings[0] and "kept" in warnings[0]
    assert job["events"][-1].step == "done"
    output = job["outputs"]["Q8_0"]
    assert output.is_file() and read_sidecar(output).format == "gguf:Q8_0"
    assert job["records"][0].verdict is None


def test_a_cancelled_check_keeps_the_outputs_and_warns(chat_ggufs, tmp_path):
    cancel = CancelToken()

    def on_progress(event):
        if event.step in ("original", "perplexity"):  # the check's child is scoring
            cancel.cancel()

    job = run_quantize(chat_ggufs["F16"], "Q8_0,Q4_K_M", tmp_path / "out", cancel=cancel, on_progress=on_progress,
                       check=True, threads=2)
    warnings = [e.message for e in job["events"] if e.step == "warning"]
    assert warnings == ["Quality check cancelled; the outputs are finished and kept."]
    assert sorted(job["outputs"]) == ["Q4_K_M", "Q8_0"]
    assert all(p.is_file() and read_sidecar(p) is not None for p in job["outputs"].values())
    assert all(r.verdict is None for r in job["records"])


def test_one_output_that_cannot_be_checked_does_not_stop_the_others(tiny_nochat_gguf, tmp_path):
    from engine.evaluate.quick_check import quick_check_all
    from engine.jobs import run_job

    good = tmp_path / "model-F16-copy.gguf"  # the source itself under another name: nothing lost
    good.symlink_to(tiny_nochat_gguf)
    broken = tmp_path / "model-Q4_0.gguf"
    broken.write_bytes(b"GGUF" + bytes(60))  # a header that ends at once: llama.cpp refuses to load it
    records = run_job(quick_check_all([broken, good], tiny_nochat_gguf, threads=2, save=False,
                                      names=["Q4_0", "F16"], keep_going=True))
    assert set(records[0]) == {"error"} and "model-Q4_0.gguf" in records[0]["error"], records[0]
    assert records[1]["verdict"] == "near-lossless" and records[1]["kld_mean"] < 1e-6 and records[1]["tokens"] > 0
    with pytest.raises(QuantDeskError, match="model-Q4_0.gguf"):  # without keep_going the first failure ends it
        run_job(quick_check_all([broken], tiny_nochat_gguf, threads=2, save=False))
