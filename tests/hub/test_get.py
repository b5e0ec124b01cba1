"""``quantdesk get`` against a fake Hub on 127.0.0.1: the real huggingface_hub client, real
processes and signals, the real test model's files; nothing reaches the internet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from engine.inspect import cached_models, inspect_model
from tests.hub.conftest import ROOT, get_cmd, hub_env, run_get

TINY = "quantdesk-test/tiny"
WEIGHTS = "model.safetensors"


def _error(events: list[dict]) -> str:
    errors = [e for e in events if e["event"] == "error"]
    assert errors, events
    return errors[-1]["message"]


def test_full_download_opens_as_a_model(hub, tmp_path: Path, tiny_dir: Path):
    proc, events = run_get(tmp_path, hub.url, TINY)
    assert proc.returncode == 0, proc.stderr
    plan = events[0]
    assert plan["event"] == "plan"
    names = {f["name"] for f in plan["files"]}
    assert names == {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                     "chat_template.jinja", WEIGHTS}
    assert plan["download_bytes"] == sum(p.stat().st_size for p in tiny_dir.iterdir()
                                         if p.name in names)
    assert plan["model"]["architecture"] == "LlamaForCausalLM" and plan["recommended"]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["fraction"] == 1.0
    assert any(e["extra"].get("file") == WEIGHTS and e["extra"]["file_bytes_total"] for e in progress)
    done = events[-1]
    assert done["event"] == "done"
    snapshot = Path(done["path"])
    model = inspect_model(snapshot)
    assert model.kind == "hf" and model.parameters == inspect_model(tiny_dir).parameters
    assert (snapshot / WEIGHTS).read_bytes() == (tiny_dir / WEIGHTS).read_bytes()
    assert (snapshot / WEIGHTS).is_symlink()  # huggingface_hub's own layout: snapshot links to blobs
    assert cached_models(tmp_path / "hf" / "hub") == [(TINY, snapshot)]
    assert hub.stats.served[WEIGHTS] == (tiny_dir / WEIGHTS).stat().st_size
    # A second run finds everything in the cache and downloads nothing more.
    before = dict(hub.stats.served)
    proc, events = run_get(tmp_path, hub.url, TINY)
    assert proc.returncode == 0, proc.stderr
    assert events[0]["remaining_bytes"] == 0 and hub.stats.served == before


def test_cancel_then_resume_downloads_no_byte_twice(hub, tmp_path: Path, tiny_dir: Path):
    size = (tiny_dir / WEIGHTS).stat().st_size
    hub.throttle[WEIGHTS] = 0.02  # about 3 MiB/s: the cancel lands part-way through
    proc = subprocess.Popen(get_cmd(TINY), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=hub_env(tmp_path, hub.url), cwd=ROOT)
    try:
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("extra", {}).get("file") == WEIGHTS and event["extra"]["file_bytes_done"] > 2 * 1024**2:
                break
        sent_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent_at
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert took < 5, f"the cancel took {took:.1f} s"
    last = json.loads(rest.splitlines()[-1])
    assert last["event"] == "error" and last["cancelled"] and "resumes" in last["message"]
    parts = list((tmp_path / "hf" / "hub").glob("models--*/blobs/*.quantdesk.part"))
    assert len(parts) == 1
    kept = parts[0].stat().st_size
    assert 2 * 1024**2 < kept < size
    first_run = hub.stats.served[WEIGHTS]
    hub.throttle.clear()
    proc2, events = run_get(tmp_path, hub.url, TINY)
    assert proc2.returncode == 0, proc2.stderr
    assert events[0]["present_bytes"] >= kept
    ranges = [r for (m, p, r) in hub.stats.requests if m == "GET" and p.startswith("/cdn/")]
    assert ranges[-1] == f"bytes={kept}-"  # the second run asked only for the rest
    assert hub.stats.served[WEIGHTS] - first_run == size - kept
    # Bytes the server had sent but the client never read (socket buffers) are the only overlap.
    assert hub.stats.served[WEIGHTS] - size < 4 * 1024**2
    assert not list((tmp_path / "hf" / "hub").glob("models--*/blobs/*.quantdesk.part"))
    snapshot = Path(events[-1]["path"])
    assert (snapshot / WEIGHTS).read_bytes() == (tiny_dir / WEIGHTS).read_bytes()


def test_dropped_connection_resumes_where_it_broke(hub, tmp_path: Path, tiny_dir: Path):
    size = (tiny_dir / WEIGHTS).stat().st_size
    hub.drop_after[WEIGHTS] = 5 * 1024**2
    proc, events = run_get(tmp_path, hub.url, TINY)
    assert proc.returncode == 0, proc.stderr
    ranges = [r for (m, p, r) in hub.stats.requests if m == "GET" and p.startswith("/cdn/")]
    assert ranges == [None, f"bytes={5 * 1024**2}-"]
    assert hub.stats.served[WEIGHTS] == size  # not one byte twice
    snapshot = Path(events[-1]["path"])
    assert (snapshot / WEIGHTS).read_bytes() == (tiny_dir / WEIGHTS).read_bytes()


def test_gated_repository_names_the_page_to_accept_the_licence(hub, tmp_path: Path):
    proc, events = run_get(tmp_path, hub.url, "quantdesk-test/gated")
    assert proc.returncode == 2
    message = _error(events)
    assert "gated" in message and f"{hub.url}/quantdesk-test/gated" in message
    assert WEIGHTS not in hub.stats.served
    # With the token (passed through, never stored) it downloads.
    proc, events = run_get(tmp_path, hub.url, "quantdesk-test/gated", "--token", hub.token)
    assert proc.returncode == 0, proc.stderr
    assert not any(hub.token in p.read_text(errors="ignore") for p in (tmp_path / "hf").rglob("*")
                   if p.is_file() and p.stat().st_size < 1024**2)


def test_token_from_environment_is_used(hub, tmp_path: Path):
    proc, _ = run_get(tmp_path, hub.url, "quantdesk-test/gated", HF_TOKEN=hub.token)
    assert proc.returncode == 0, proc.stderr


def test_missing_repository_is_one_sentence(hub, tmp_path: Path):
    proc, events = run_get(tmp_path, hub.url, "quantdesk-test/nothing-here")
    assert proc.returncode == 2
    message = _error(events)
    assert message.startswith("No model quantdesk-test/nothing-here") and "\n" not in message


def test_pickle_only_repository_is_refused_before_download(hub, tmp_path: Path):
    proc, events = run_get(tmp_path, hub.url, "quantdesk-test/bin-only")
    assert proc.returncode == 2
    assert "only pickle weights" in _error(events)
    assert "pytorch_model.bin" not in hub.stats.served


def test_offline_mode_says_so_at_once(hub, tmp_path: Path):
    start = time.monotonic()
    proc, events = run_get(tmp_path, hub.url, TINY, HF_HUB_OFFLINE="1")
    assert proc.returncode == 2 and "HF_HUB_OFFLINE" in _error(events)
    assert time.monotonic() - start < 30
    assert hub.stats.requests == []


def test_no_network_is_a_sentence_not_a_hang(tmp_path: Path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    proc, events = run_get(tmp_path, f"http://127.0.0.1:{port}", TINY, timeout=90)
    assert proc.returncode == 2
    assert "Cannot reach the Hugging Face Hub" in _error(events)
    assert time.monotonic() - start < 60


def test_a_server_that_never_answers_times_out(tmp_path: Path):
    import socket

    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        start = time.monotonic()
        proc, events = run_get(tmp_path, f"http://127.0.0.1:{port}", TINY, timeout=90,
                               HF_HUB_ETAG_TIMEOUT="2", HF_HUB_DOWNLOAD_TIMEOUT="2")
    assert proc.returncode == 2
    assert "in time" in _error(events)
    assert time.monotonic() - start < 30


def test_full_disk_is_refused_before_download(hub, tmp_path: Path):
    cache = tmp_path / "hf"
    cache.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(cache)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        proc, events = run_get(tmp_path, hub.url, TINY)
        assert proc.returncode == 2
        message = _error(events)
        assert message.startswith("Not enough free disk space") and "MiB" in message
        assert WEIGHTS not in hub.stats.served
    finally:
        subprocess.run(["umount", str(cache)], check=False)


def test_plan_only_without_yes_on_a_pipe(hub, tmp_path: Path):
    cmd = [c for c in get_cmd(TINY) if c != "--yes"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=hub_env(tmp_path, hub.url),
                          cwd=ROOT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "--yes" in proc.stderr
    assert WEIGHTS not in hub.stats.served
    assert os.path.isdir(tmp_path / "hf" / "hub")  # only config.json came down
