"""QuantDesk only ever deletes or overwrites what it made: real jobs in a folder full of the user's things.

Each case fills the output folder with what a Downloads folder holds (a
browser's ``film.iso.part``, a ``chapters.part/`` folder, notes), runs or
breaks a real job there, and compares every byte afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import JobCancelled, QuantDeskError
from engine.fsutil import LOCK_NAME, FolderLock, clean_stale_parts, is_temporary, part_path
from engine.jobs import CancelToken
from tests.fixtures.quantize import run_quantize

ROOT = Path(__file__).resolve().parents[2]
_LOCK_SENTENCE = r"Another QuantDesk job \(process {pid}, started [^)]+\) is writing into"


# --------------------------------------------------------------------------- helpers


def _user_files(folder: Path) -> dict[str, str]:
    """What a user's Downloads folder holds; returns the folder's snapshot."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "film.iso.part").write_bytes(os.urandom(4096))  # a browser's download in progress
    (folder / "chapters.part").mkdir()
    (folder / "chapters.part" / "one.md").write_text("# Chapter one\n")
    return snapshot(folder)


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with a digest of its bytes ("dir" for folders)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        found[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "engine", "quantize", *map(str, args)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("quantdesk: error: "), stderr
    return lines[0]


def _no_quantdesk_leftovers(folder: Path) -> None:
    names = [p.name for p in folder.rglob("*")]
    assert LOCK_NAME not in names
    assert not [n for n in names if is_temporary(n)], names


@pytest.fixture(scope="module")
def tiny_bf16(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny as a BF16 GGUF (conversion only): GGUF → GGUF jobs from it take seconds."""
    out = tmp_path_factory.mktemp("tiny-bf16")
    return run_quantize(tiny_dir, "BF16", out)["outputs"]["BF16"]


# --------------------------------------------------------------------------- stale clean-up


def test_stale_clean_up_removes_only_dead_quantdesk_temporaries(tmp_path):
    before = _user_files(tmp_path)
    (tmp_path / "report.quantdesk-part").write_text("no owner in the name: not ours to guess")
    dead = _dead_pid()
    dead_file = tmp_path / f"m-Q4_K_M.gguf.{dead}-0.quantdesk-part"
    dead_file.write_bytes(b"half a file")
    dead_folder = tmp_path / f"m-bnb-nf4.{dead}-0.quantdesk-part"
    dead_folder.mkdir()
    (dead_folder / "model.safetensors").write_bytes(b"half a model")
    reused = tmp_path / f"r.gguf.{os.getpid()}-1.quantdesk-part"  # a live pid, but not the process that started then
    reused.write_bytes(b"x")
    live = part_path(tmp_path / "live.gguf")  # this process: a job in progress
    live.write_bytes(b"being written")
    orphan_old = tmp_path / f"earlier.gguf.{dead}-0.quantdesk-old"  # kept aside by a job that died
    orphan_old.write_bytes(b"the earlier output")
    (tmp_path / "kept.gguf").write_bytes(b"the new output")
    (tmp_path / f"kept.gguf.{dead}-0.quantdesk-old").write_bytes(b"older")

    clean_stale_parts(tmp_path)

    after = snapshot(tmp_path)
    for name, digest in before.items():
        assert after[name] == digest
    assert (tmp_path / "report.quantdesk-part").exists()
    assert live.read_bytes() == b"being written"
    assert not dead_file.exists() and not dead_folder.exists() and not reused.exists()
    assert (tmp_path / "earlier.gguf").read_bytes() == b"the earlier output"  # put back, not deleted
    assert (tmp_path / "kept.gguf").read_bytes() == b"the new output"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".quantdesk-old")]


@pytest.mark.slow
def test_live_jobs_parts_survive_another_process_clean_up(tiny_dir, tmp_path):
    out = tmp_path / "out"
    before = _user_files(out)
    proc = subprocess.Popen(_cli(tiny_dir, "--to", "Q4_0", "--out", out, "--json", "--no-check"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        parts: list[Path] = []
        for line in proc.stdout:
            event = json.loads(line)
            parts = [p for p in out.iterdir() if p.name.endswith(".quantdesk-part")]
            if event.get("step") == "convert" and parts:
                break
        assert parts, "the job never had a part file"
        assert clean_stale_parts(out) == []  # this test process is another process
        assert all(p.exists() for p in parts)
        with pytest.raises(QuantDeskError, match=_LOCK_SENTENCE.format(pid=proc.pid)):
            FolderLock(out).acquire()
        _rest, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    after = snapshot(out)
    assert {k: after[k] for k in before} == before
    assert (out / "tiny-Q4_0.gguf").is_file()
    _no_quantdesk_leftovers(out)


def test_a_replaced_output_folder_comes_back_on_rollback_and_goes_on_commit(tmp_path):
    """The bitsandbytes case without the minute of quantizing: a folder output replaced through the job's
    transaction (as engine.backends.bnb.job does), then undone, then replaced for good."""
    from engine.artifacts import made_by_quantdesk, sidecar_path
    from engine.fsutil import Transaction

    before = _user_files(tmp_path)
    earlier = tmp_path / "m-bnb-nf4"
    earlier.mkdir()
    (earlier / "model.safetensors").write_bytes(b"earlier weights")
    sidecar_path(earlier).write_text(json.dumps({"format": "hf:bnb-nf4", "source": "/m"}))
    before = snapshot(tmp_path)
    for finish in ("rollback", "commit"):
        txn = Transaction(tmp_path).begin()
        part = txn.part(earlier)
        part.mkdir()
        (part / "model.safetensors").write_bytes(b"new weights")
        txn.promote(part, earlier, made_by_quantdesk)
        txn.claim(sidecar_path(earlier), lambda p: True)
        sidecar_path(earlier).write_text(json.dumps({"format": "hf:bnb-nf4", "source": "/m", "new": True}))
        assert (earlier / "model.safetensors").read_bytes() == b"new weights"
        getattr(txn, finish)()
        if finish == "rollback":
            assert snapshot(tmp_path) == before
    assert (earlier / "model.safetensors").read_bytes() == b"new weights"
    assert json.loads(sidecar_path(earlier).read_text())["new"] is True
    _no_quantdesk_leftovers(tmp_path)


# --------------------------------------------------------------------------- the folder's lock


def test_lock_refuses_a_live_holder_and_takes_over_from_a_dead_one(tmp_path):
    code = ("import sys, time\nfrom pathlib import Path\nfrom engine.fsutil import FolderLock\n"
            "FolderLock(Path(sys.argv[1])).acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(QuantDeskError, match=_LOCK_SENTENCE.format(pid=holder.pid)):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: no chance to remove its lock
        holder.wait()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid
    lock = FolderLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    # A live pid that started at another time is a reused pid: its lock is stale too.
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "start": 1.0}))
    FolderLock(tmp_path).acquire().release()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_real_job_takes_over_a_stale_lock(tiny_bf16, tmp_path):
    out = tmp_path / "out"
    before = _user_files(out)
    (out / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "start": 1.0, "since": "2024-01-01T00:00:00"}))
    result = run_quantize(tiny_bf16, "Q8_0", out)
    assert result["outputs"]["Q8_0"].is_file()
    after = snapshot(out)
    assert {k: after[k] for k in before} == before
    _no_quantdesk_leftovers(out)


@pytest.mark.slow
def test_two_jobs_started_at_once_into_one_folder_one_refuses(tiny_dir, tmp_path):
    out = tmp_path / "out"
    before = _user_files(out)
    procs = [subprocess.Popen(_cli(tiny_dir, "--to", "Q4_0", "--out", out, "--no-check"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env()) for _ in range(2)]
    try:
        results = [(p, *p.communicate(timeout=600)) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [r[2] for r in results]
    winner = next(p for p in procs if p.returncode == 0)
    loser_err = next(err for p, _out, err in results if p.returncode == 2)
    line = _one_error_line(loser_err)
    assert re.search(_LOCK_SENTENCE.format(pid=winner.pid), line), line
    after = snapshot(out)
    assert {k: after[k] for k in before} == before
    assert (out / "tiny-Q4_0.gguf").is_file()
    _no_quantdesk_leftovers(out)


# --------------------------------------------------------------------------- cancel and failure


@pytest.mark.slow
def test_cancel_keeps_the_users_files_and_files_saved_during_the_job(tiny_bf16, tmp_path):
    out = tmp_path / "out"
    before = _user_files(out)
    cancel = CancelToken()
    seen_part = []

    def on_progress(event) -> None:
        parts = [p.name for p in out.iterdir() if p.name.endswith(".quantdesk-part")]
        if event.step == "quantize" and event.tensor_index and parts and not cancel.cancelled:
            seen_part.extend(parts)
            (out / "saved-meanwhile.txt").write_text("a browser finished this download during the job")
            (out / "chapters.part" / "two.md").write_text("# Chapter two\n")
            cancel.cancel()

    with pytest.raises(JobCancelled):
        run_quantize(tiny_bf16, "Q4_0,Q8_0", out, cancel=cancel, on_progress=on_progress)
    assert seen_part  # the cancel hit the job while it was writing
    expected = {**before, "saved-meanwhile.txt": _digest(b"a browser finished this download during the job"),
                "chapters.part/two.md": _digest(b"# Chapter two\n")}
    assert snapshot(out) == expected


@pytest.mark.slow
def test_a_folder_the_job_made_stays_when_the_user_saved_into_it(tiny_bf16, tmp_path):
    out = tmp_path / "new" / "out"
    cancel = CancelToken()

    def on_progress(event) -> None:
        if event.step == "quantize" and not cancel.cancelled:
            (out / "mine.txt").write_text("saved here during the job")
            cancel.cancel()

    with pytest.raises(JobCancelled):
        run_quantize(tiny_bf16, "Q8_0", out, cancel=cancel, on_progress=on_progress)
    assert snapshot(tmp_path) == {"new": "dir", "new/out": "dir", "new/out/mine.txt":
                                  _digest(b"saved here during the job")}


@pytest.mark.slow
def test_a_failing_later_target_restores_the_earlier_output(tiny_bf16, tmp_path):
    """The earlier Q4_0 (made with other settings, so its bytes differ) is replaced by the new one, then
    the user saves a file named like the next target: the job fails there and puts everything back."""
    out = tmp_path / "out"
    _user_files(out)
    run_quantize(tiny_bf16, "Q4_0", out, pure=True)
    before = snapshot(out)
    assert {"tiny-Q4_0.gguf", "tiny-Q4_0.gguf.quantdesk.json", "README.md", "Modelfile"} <= set(before)
    mine = b"the user's own tiny-Q8_0.gguf, downloaded meanwhile"

    def on_progress(event) -> None:
        if event.step == "quantize" and not (out / "tiny-Q8_0.gguf").exists():
            (out / "tiny-Q8_0.gguf").write_bytes(mine)

    with pytest.raises(QuantDeskError, match=r"tiny-Q8_0.gguf already exists and was not made by QuantDesk"):
        run_quantize(tiny_bf16, "Q4_0,Q8_0", out, on_progress=on_progress)
    assert snapshot(out) == {**before, "tiny-Q8_0.gguf": _digest(mine)}


@pytest.mark.slow
def test_cancel_in_a_later_backend_restores_the_earlier_output(tiny_dir, tmp_path):
    out = tmp_path / "out"
    _user_files(out)
    run_quantize(tiny_dir, "Q4_0", out, pure=True)
    before = snapshot(out)
    earlier_inode = (out / "tiny-Q4_0.gguf").stat().st_ino
    cancel = CancelToken()
    replaced = []

    def on_progress(event) -> None:
        # bitsandbytes is loading: the GGUF backend has already put the new Q4_0 in place.
        if event.step == "loading" and not cancel.cancelled:
            replaced.append((out / "tiny-Q4_0.gguf").stat().st_ino != earlier_inode)
            cancel.cancel()

    with pytest.raises(JobCancelled):
        run_quantize(tiny_dir, "Q4_0,bnb-nf4", out, cancel=cancel, on_progress=on_progress, device="cpu")
    assert replaced == [True]
    assert snapshot(out) == before


# --------------------------------------------------------------------------- same names, empty names


@pytest.mark.slow
def test_same_name_files_not_made_by_quantdesk_are_refused_unless_overwrite(tiny_bf16, tmp_path):
    out = tmp_path / "out"
    _user_files(out)
    (out / "tiny-Q8_0.gguf").write_bytes(b"my own download")
    (out / "README.md").write_text("# My folder\n")
    (out / "Modelfile").write_text("FROM llama3\n")
    before = snapshot(out)
    for name in ("tiny-Q8_0.gguf", "README.md", "Modelfile"):
        proc = subprocess.run(_cli(tiny_bf16, "--to", "Q8_0", "--out", out), capture_output=True, text=True,
                              timeout=300, env=_env())
        assert proc.returncode == 2
        line = _one_error_line(proc.stderr)
        assert f"{out / name} already exists and was not made by QuantDesk" in line and "--overwrite" in line
        assert snapshot(out) == before
        # The user moves that one away; the next one is refused in turn.
        os.rename(out / name, tmp_path / name)
        before = snapshot(out)
    for name in ("tiny-Q8_0.gguf", "README.md", "Modelfile"):
        os.rename(tmp_path / name, out / name)
    proc = subprocess.run(_cli(tiny_bf16, "--to", "Q8_0", "--out", out, "--overwrite"), capture_output=True,
                          text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert (out / "tiny-Q8_0.gguf").read_bytes()[:4] == b"GGUF"
    assert (out / "tiny-Q8_0.gguf.quantdesk.json").is_file()
    assert (out / "README.md").read_text().startswith("<!-- quantdesk model card -->")
    assert (out / "Modelfile").read_text().startswith("# Modelfile written by QuantDesk")
    assert (out / "notes.txt").read_text() == "my notes\n"
    _no_quantdesk_leftovers(out)


@pytest.mark.parametrize("blank", ["", "   "])
def test_empty_out_is_refused(tmp_path, blank):
    src = tmp_path / "model"
    src.mkdir()
    proc = subprocess.run(_cli(src, "--to", "Q4_0", "--out", blank), capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=_env())
    assert proc.returncode == 2
    assert "The output folder is empty" in _one_error_line(proc.stderr)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    from engine.backends import QuantizeRequest

    with pytest.raises(QuantDeskError, match="The output folder is empty"):
        QuantizeRequest(source=src, targets=[], out_dir=blank)


# --------------------------------------------------------------------------- a real full disk


@contextlib.contextmanager
def _small_disk(where: Path, size: str):
    """A tmpfs of ``size`` mounted at ``where``; skips when this process may not mount."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(path: Path) -> None:
    """Write ``path`` until the disk is full, as another program might."""
    with open(path, "wb", buffering=0) as handle:
        for size in (1024**2, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as err:
                assert err.errno == errno.ENOSPC


@pytest.mark.slow
def test_a_disk_too_small_is_refused_before_anything_is_written(tiny_dir, tmp_path):
    with _small_disk(tmp_path / "disk", "3m") as disk:
        (disk / "notes.txt").write_text("mine")
        proc = subprocess.run(_cli(tiny_dir, "--to", "Q4_0", "--out", disk / "out"), capture_output=True,
                              text=True, timeout=300, env=_env())
        assert proc.returncode == 2
        line = _one_error_line(proc.stderr).lower()
        assert "disk" in line and ("full" in line or "space" in line), line
        assert snapshot(disk) == {"notes.txt": _digest(b"mine")}


@pytest.mark.slow
def test_a_disk_that_fills_up_during_the_job_is_one_sentence_and_leaves_nothing(tiny_dir, tmp_path):
    with _small_disk(tmp_path / "disk", "96m") as disk:
        out = disk / "out"
        before = _user_files(out)
        proc = subprocess.Popen(_cli(tiny_dir, "--to", "Q4_0", "--out", out, "--json"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env())
        try:
            first = json.loads(proc.stdout.readline())
            assert first["event"] in ("progress", "warning"), first
            _fill(out / "big-download.bin")  # another program fills the disk while the job starts
            _rest, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 2, err
        line = _one_error_line(err).lower()
        assert "disk" in line and ("full" in line or "filled up" in line), line
        after = snapshot(out)
        assert set(after) == set(before) | {"big-download.bin"}
        assert {k: after[k] for k in before} == before
