"""Get from Hugging Face in the window: the real dialog, the real queue and job processes, the real
huggingface_hub client against the fake Hub on 127.0.0.1 (tests/hub/fakehub.py); nothing reaches the internet.

The test process has HF_HUB_OFFLINE=1 (tests/conftest.py) and may have imported huggingface_hub
already; the window plans and downloads in job processes started after the environment below is
set, so they read the fake Hub's address and a cache under tmp_path, as a user's would read theirs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.hub.fakehub import FakeHub, Repo

TINY = "quantdesk-test/tiny"
GATED = "quantdesk-test/gated"
WEIGHTS = "model.safetensors"


class LoginHub(FakeHub):
    """The fake Hub plus ``/api/whoami-v2``, which huggingface_hub's login asks before it saves a token."""

    def _handle(self, h, head: bool) -> None:
        if h.path.split("?")[0] == "/api/whoami-v2":
            if h.headers.get("Authorization") != f"Bearer {self.token}":
                return self._error(h, 401, "Invalid credentials", head)
            body = json.dumps({"type": "user", "name": "quantdesk-tester",
                               "auth": {"accessToken": {"displayName": "quantdesk-test", "role": "read"}}})
            return self._send(h, 200, {"Content-Type": "application/json"}, body.encode(), head)
        return super()._handle(h, head)


@pytest.fixture
def hub(tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The fake Hub, and an environment whose job processes use it and a Hugging Face home under tmp_path."""
    files = Repo.from_folder(tiny_dir).files
    repos = {TINY: Repo(dict(files)), GATED: Repo(dict(files), gated=True)}
    for key in list(os.environ):
        if key.startswith(("HF_", "HUGGINGFACE_")) or key == "TRANSFORMERS_OFFLINE":
            monkeypatch.delenv(key)
    with LoginHub(repos) as server:
        for key, value in {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1",
                           "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "*", "no_proxy": "*"}.items():
            monkeypatch.setenv(key, value)
        yield server


def _plan(qtbot, window, repo_id: str, token: str = ""):
    """Type the name (and a token) in the dialog and press Show plan; returns the dialog once it answered."""
    window.get_action.trigger()
    dialog = window.get_dialog
    qtbot.waitUntil(dialog.isVisible, timeout=5_000)
    dialog.repo.clear()
    qtbot.keyClicks(dialog.repo, repo_id)
    if token:
        dialog.token.clear()
        qtbot.keyClicks(dialog.token, token)
    dialog.plan_btn.click()
    qtbot.waitUntil(lambda: dialog.plan is not None or dialog.error.isVisible(), timeout=90_000)
    return dialog


def _download(qtbot, window, dialog):
    assert dialog.download_btn.isEnabled()
    dialog.download_btn.click()
    assert not dialog.isVisible()
    job = window.queue.jobs[-1]
    assert job.spec.kind == "get"
    return job


def _snapshot(tmp_path: Path, repo_id: str) -> Path:
    folder = tmp_path / "hf" / "hub" / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    (snapshot,) = folder.iterdir()
    return snapshot


def _opened(qtbot, window, path: Path) -> None:
    qtbot.waitUntil(lambda: window.session.model_path == path and bool(window.session.model_info)
                    and not window.session.busy, timeout=60_000)


def test_type_a_name_see_the_plan_download_and_the_model_opens(qtbot, hub, main_window, tmp_path, tiny_dir):
    window = main_window
    assert window.stack.currentWidget() is window.start_panel  # a first start: Start here offers it too
    assert window.start_panel.get.isVisible()
    dialog = _plan(qtbot, window, TINY)
    assert not dialog.error.isVisible(), dialog.error.text()
    assert dialog.plan_frame.isVisible()
    assert "LlamaForCausalLM" in dialog.model_text.text() and "parameters" in dialog.model_text.text()
    assert "Q8_0" in dialog.fits_text.text() and "fits" in dialog.fits_text.text()
    size = sum((tiny_dir / f["name"]).stat().st_size for f in dialog.plan["files"])
    assert dialog.plan["download_bytes"] == size and "6 files" in dialog.download_text.text()
    assert "needed" in dialog.disk_text.text() and "free" in dialog.disk_text.text()
    assert dialog.download_btn.text().startswith("&Download 30")
    assert WEIGHTS not in hub.stats.served  # nothing large before the user confirms

    events: list = []
    window.queue.progress.connect(lambda _job, event: events.append(event))
    job = _download(qtbot, window, dialog)
    assert window.tabs.currentWidget() is window.quantize  # the job's card is in view
    row = window.quantize.job_list.row_for(job)
    qtbot.waitUntil(lambda: job.finished, timeout=120_000)
    assert job.state == "done", job.outcome.message
    snapshot = _snapshot(tmp_path, TINY)
    assert Path(job.outcome.value) == snapshot
    _opened(qtbot, window, snapshot)
    assert (snapshot / WEIGHTS).read_bytes() == (tiny_dir / WEIGHTS).read_bytes()
    per_file = [e for e in events if e.extra.get("file") == WEIGHTS]
    assert per_file and per_file[-1].extra["file_bytes_done"] == per_file[-1].extra["file_bytes_total"]
    assert events[-1].fraction == 1.0
    assert row.state.text() == "done" and "opens" in row.step.text()
    assert row.folder() == snapshot
    assert not window.banner.isVisible() or window.banner.objectName() != "ErrorBanner"
    # The Hugging Face cache is listed where one-click models are.
    qtbot.waitUntil(lambda: snapshot in window.start_panel.picks.paths(), timeout=30_000)


def test_gated_model_says_so_then_works_with_a_token_saved_by_huggingface_hub(qtbot, hub, main_window, tmp_path):
    window = main_window
    dialog = _plan(qtbot, window, GATED)
    assert dialog.error.isVisible() and dialog.plan is None
    sentence = dialog.error.text()
    assert "gated" in sentence and f"{hub.url}/{GATED}" in sentence
    assert window.banner.isVisible() and window.banner.text.text() == sentence  # the window's banner too
    assert dialog.token_box.isVisible() and not dialog.download_btn.isEnabled()

    wrong = _plan(qtbot, window, GATED, token="hf_not_the_token")
    assert wrong.error.isVisible() and "token" in wrong.error.text().lower()
    assert not (tmp_path / "hf" / "token").exists()

    dialog = _plan(qtbot, window, GATED, token=hub.token)
    assert not dialog.error.isVisible(), dialog.error.text()
    # Saved by huggingface_hub's own login, where every Hugging Face tool looks for it.
    assert (tmp_path / "hf" / "token").read_text().strip() == hub.token
    assert "quantdesk-test" in (tmp_path / "hf" / "stored_tokens").read_text()
    job = _download(qtbot, window, dialog)
    qtbot.waitUntil(lambda: job.finished, timeout=120_000)
    assert job.state == "done", job.outcome.message
    _opened(qtbot, window, _snapshot(tmp_path, GATED))


def test_cancel_mid_download_then_resume(qtbot, hub, main_window, tmp_path, tiny_dir):
    window = main_window
    size = (tiny_dir / WEIGHTS).stat().st_size
    hub.throttle[WEIGHTS] = 0.02  # about 3 MiB/s: the cancel lands part-way through
    dialog = _plan(qtbot, window, TINY)
    job = _download(qtbot, window, dialog)
    row = window.quantize.job_list.row_for(job)
    seen: list = []
    window.queue.progress.connect(lambda j, e: seen.append(e) if j is job else None)
    qtbot.waitUntil(lambda: any(e.extra.get("file") == WEIGHTS and e.extra["file_bytes_done"] > 2 * 1024**2
                                for e in seen), timeout=120_000)
    qtbot.waitUntil(lambda: row.file_bar.isVisible() and "left" in row.eta.text(), timeout=10_000)  # file, ETA
    assert "/s" in row.step.text()
    row.cancel_btn.click()
    qtbot.waitUntil(lambda: job.finished, timeout=15_000)
    assert job.state == "cancelled"
    assert "stays in the cache" in row.step.text()
    parts = list((tmp_path / "hf" / "hub").glob("models--*/blobs/*.quantdesk.part"))
    assert len(parts) == 1
    kept = parts[0].stat().st_size
    assert 2 * 1024**2 < kept < size
    assert window.session.model_path is None  # nothing half-downloaded opened

    hub.throttle.clear()
    assert row.retry_btn.isVisible() and row.retry_btn.text() == "Resume"
    row.retry_btn.click()
    again = window.queue.jobs[-1]
    assert again is not job and again.spec.kind == "get"
    qtbot.waitUntil(lambda: again.finished, timeout=120_000)
    assert again.state == "done", again.outcome.message
    ranges = [r for (m, p, r) in hub.stats.requests if m == "GET" and p.startswith("/cdn/")]
    assert ranges[-1] == f"bytes={kept}-"  # the retry asked only for the rest
    assert hub.stats.served[WEIGHTS] - size < 4 * 1024**2  # only bytes in flight at the cancel came twice
    snapshot = _snapshot(tmp_path, TINY)
    _opened(qtbot, window, snapshot)
    assert (snapshot / WEIGHTS).read_bytes() == (tiny_dir / WEIGHTS).read_bytes()
