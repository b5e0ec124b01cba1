"""The verdict: thresholds, evidence, and the quick check on real quantizations of the demo model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.artifacts import read_sidecar
from engine.evaluate.verdict import THRESHOLDS, VERDICTS, AnswerCheck, compare_answers, judge
from engine.jobs import run_job

# llama.cpp's published Llama 3 8B figures (mean KLD, same top %); p99 taken as 5x the mean.
LLAMA3 = {"Q8_0": (0.0014, 97.7), "Q6_K": (0.0055, 96.0), "Q4_K_M": (0.031, 91.9), "Q3_K_M": (0.10, 88.0),
          "Q2_K": (0.445, 71.1)}


def test_thresholds_place_llama_cpp_published_k_quants():
    def label(name):
        mean, same = LLAMA3[name]
        return judge(mean, 5 * mean, same).label

    assert label("Q8_0") == label("Q6_K") == "near-lossless"
    assert label("Q4_K_M") == "small loss"
    assert label("Q3_K_M") == "noticeable loss"
    assert label("Q2_K") == "broken"
    assert list(THRESHOLDS) == list(VERDICTS[:3])


def test_worst_column_decides_and_answers_lower_by_one_step():
    assert judge(0.005, 2.0, 99.0).label == "noticeable loss"  # a heavy tail the mean hides
    assert judge(0.005, 0.05, 90.0).label == "small loss"
    many_changed = compare_answers(["a", "b", "c"], ["Paris.", "42", "x"], ["Paris.", "41", "y"])
    assert many_changed.matching == 1 and many_changed.first_difference["prompt"] == "b"
    v = judge(0.005, 0.05, 97.0, many_changed, name="Q8_0")
    assert v.label == "small loss" and v.by_numbers == "near-lossless"
    assert v.evidence.startswith("Q8_0: same top token 97% of the time, KLD 0.005")
    assert "2 of 3 answers changed" in v.evidence and "'b' → '41'" in v.evidence
    assert judge(0.9, 9.0, 40.0, AnswerCheck(6, 0)).label == "broken"
    assert judge(0.2, 1.0, 80.0, AnswerCheck(6, 0)).label == "noticeable loss"  # answers alone never say broken
    same = compare_answers(["q"], ["The  answer\n"], ["The answer"])
    assert same.matching == 1 and "all 1 answers match" in judge(0.001, 0.01, 99, same).evidence


_Q2K = (
    "import sys, llama_cpp\n"
    "p = llama_cpp.llama_model_quantize_default_params()\n"
    "p.ftype = 10\n"  # LLAMA_FTYPE_MOSTLY_Q2_K
    "p.nthread = 2\n"
    "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))\n"
)


@pytest.mark.slow
def test_quick_check_judges_q8_0_and_q2_k_on_the_demo_model(chat_ggufs, tmp_path):
    from engine.evaluate.quick_check import QUICK_CTX, QUICK_TOKENS, quick_check

    source = chat_ggufs["F16"]
    q8 = tmp_path / "smollm2-Q8_0.gguf"
    q8.symlink_to(chat_ggufs["Q8_0"])
    q2 = tmp_path / "smollm2-Q2_K.gguf"
    subprocess.run([sys.executable, "-c", _Q2K, str(source), str(q2)], check=True, capture_output=True, timeout=600)

    events = []
    first = run_job(quick_check(q8, source, threads=2), events.append)
    assert first["verdict"] in ("near-lossless", "small loss"), first["evidence"]
    assert first["original_cached"] is False and first["tokens"] == 2 * (QUICK_CTX - QUICK_CTX // 2 - 1)
    assert QUICK_TOKENS == 2 * QUICK_CTX and any(e.eta_s for e in events)
    assert first["answers_forced"] is True  # same vocabulary: one pass per prompt, no generation
    record = read_sidecar(q8).evaluation
    assert record["verdict"] == first["verdict"] and record["verdict_evidence"] == first["evidence"]
    assert record["quick_check"]["answers_total"] == 6

    second = run_job(quick_check(q2, source, threads=2))
    assert second["verdict"] in ("noticeable loss", "broken"), second["evidence"]
    assert second["original_cached"] is True and second["answers_cached"] is True  # the source ran once
    assert second["kld_mean"] > 10 * first["kld_mean"]
    assert second["evidence"].startswith("smollm2-Q2_K.gguf: same top token")
