"""The skeleton every feature stands on: CLI start-up, formats, jobs, safe writes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.errors import JobCancelled, QuantDeskError
from engine.formats import get_format, parse_targets
from engine.fsutil import check_output_folder, clean_stale_parts
from engine.jobs import CancelToken, run_in_child
from engine.units import parse_size


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from qtapp.launch import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'PySide6') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_version():
    out = subprocess.run([sys.executable, "-m", "engine", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("quantdesk ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Q4_K_M", "gguf:Q4_K_M"), ("gguf:q6_k", "gguf:Q6_K"), ("bnb-nf4", "hf:bnb-nf4"), ("int8", "hf:bnb-int8")],
)
def test_format_names(text, expected):
    assert get_format(text).id == expected


def test_unknown_format_is_one_clear_line():
    with pytest.raises(QuantDeskError, match="Unknown format 'Q9_Z'; choose one of"):
        parse_targets("Q4_K_M,Q9_Z")


def test_targets_keep_order_and_drop_repeats():
    assert [f.id for f in parse_targets("Q6_K, q4_k_m,Q6_K")] == ["gguf:Q6_K", "gguf:Q4_K_M"]


@pytest.mark.parametrize(("text", "n"), [("16GiB", 16 * 1024**3), ("16G", 16 * 1024**3), ("16000MB", 16 * 10**9)])
def test_sizes(text, n):
    assert parse_size(text) == n


def test_bad_size():
    with pytest.raises(QuantDeskError, match="write it like 16GiB"):
        parse_size("lots")


def test_stale_parts_are_removed_only_when_quantdesks_and_their_process_is_gone(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"a.gguf.{dead.pid}-0.quantdesk-part").write_bytes(b"x")
    (tmp_path / f"b-bnb-nf4.{dead.pid}-0.quantdesk-part").mkdir()
    (tmp_path / "film.iso.part").write_bytes(b"a browser's download")
    (tmp_path / "chapters.part").mkdir()
    (tmp_path / "keep.gguf").write_bytes(b"y")
    clean_stale_parts(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chapters.part", "film.iso.part", "keep.gguf"]


def test_unwritable_output_folder_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(QuantDeskError, match="is a file, not a folder; choose another folder"):
        check_output_folder(blocker / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the check leaves no trace


def _child_counts(reporter, n):
    for i in range(n):
        reporter.send("tick", i=i)
    return n * 2


def _child_sleeps(reporter):
    import time

    reporter.send("started")
    time.sleep(60)


def _child_fails(reporter):
    raise QuantDeskError("The source has no tokenizer; add tokenizer.json.")


def test_child_process_messages_and_result():
    gen = run_in_child(_child_counts, 3)
    seen = []
    while True:
        try:
            seen.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert [p["i"] for k, p in seen] == [0, 1, 2]
    assert result == 6


def test_child_cancel_ends_it_quickly():
    import time

    cancel = CancelToken()
    gen = run_in_child(_child_sleeps, cancel=cancel)
    assert next(gen)[0] == "started"
    cancel.cancel()
    start = time.monotonic()
    with pytest.raises(JobCancelled):
        next(gen)
    assert time.monotonic() - start < 1.0


def test_child_user_error_is_one_line():
    with pytest.raises(QuantDeskError, match="^The source has no tokenizer"):
        list(run_in_child(_child_fails))
