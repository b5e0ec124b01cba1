"""``quantdesk quantize``: the --json event stream, exit codes, and Ctrl-C / SIGTERM leaving nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _cli(*args):
    return [sys.executable, "-m", "engine", "quantize", *map(str, args)]


def test_json_event_stream_and_success(smollm2_gguf, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(_cli(smollm2_gguf["F16"], "--to", "Q4_0", "--out", out, "--json", "--threads", "2",
                               "--token-embedding-type", "q8_0", "--no-check"),  # the check: test_quantize_check
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all({"step", "fraction", "message"} <= set(e) for e in progress)
    fractions = [e["fraction"] for e in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(e.get("tensor_name") == "token_embd.weight" for e in progress)
    done = events[-1]
    assert done["event"] == "done"
    assert [(o["type"], o["path"]) for o in done["outputs"]] == [("Q4_0", str(out / "smollm2-Q4_0.gguf"))]
    assert done["outputs"][0]["size_bytes"] == (out / "smollm2-Q4_0.gguf").stat().st_size
    from gguf import GGMLQuantizationType, GGUFReader

    types = {t.name: t.tensor_type for t in GGUFReader(out / "smollm2-Q4_0.gguf").tensors}
    assert types["token_embd.weight"] == GGMLQuantizationType.Q8_0  # the power-user option reached llama.cpp
    assert types["blk.0.attn_q.weight"] == GGMLQuantizationType.Q4_0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--to", "Q9_Z"], "Unknown format 'Q9_Z'"),
        (["--to", "IQ1_S", "--imatrix", "none"], "cannot be made without an importance matrix"),
        (["--to", "Q4_K_M", "--output-tensor-type", "q9"], "Unknown tensor type 'q9'"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tiny_dir, tmp_path, args, needle):
    out = tmp_path / "out"
    proc = subprocess.run(_cli(tiny_dir, "--out", out, "--json", *args), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr and "Traceback" not in proc.stderr
    event = json.loads(proc.stdout.splitlines()[-1])
    assert event["event"] == "error" and needle in event["message"]
    assert not out.exists()


def test_missing_source_exits_non_zero(tmp_path):
    proc = subprocess.run(_cli(tmp_path / "nope", "--to", "Q4_K_M", "--out", tmp_path / "o"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_cancels_cleanly(smollm2_gguf, tmp_path, sig):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    proc = subprocess.Popen(_cli(smollm2_gguf["F16"], "--to", "Q4_K_M,Q6_K", "--out", out, "--json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(json.loads(line))
            if lines[-1].get("tensor_index", 0) >= 20:
                assert any(p.name.endswith(".quantdesk-part") for p in out.iterdir())
                proc.send_signal(sig)
                break
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    last = json.loads(rest.splitlines()[-1])
    assert last["event"] == "error" and last["cancelled"] is True
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
