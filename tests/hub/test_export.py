"""Handing a GGUF on: LM Studio's folder layout in a temporary home, the Ollama Modelfile and
command, and the llama-server command line. Real files, real links and copies, a real tmpfs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.artifacts import write_sidecar
from engine.errors import JobCancelled, QuantDeskError
from engine.export import (
    create_in_ollama,
    lmstudio_models_dir,
    place_in_lmstudio,
    plan_lmstudio,
    plan_ollama,
    server_command,
)
from engine.inspect import inspect_model
from engine.jobs import CancelToken, run_job
from tests.hub.conftest import ROOT


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def gguf(tmp_path: Path, tiny_nochat_gguf: Path) -> Path:
    """A GGUF QuantDesk made, with its sidecar, in a folder of its own (hard-linked: no copy)."""
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "tiny-Q8_0.gguf"
    os.link(tiny_nochat_gguf, dest)
    write_sidecar(dest, format="gguf:Q8_0", source=tmp_path / "tiny", source_name="tiny")
    return dest


@pytest.fixture
def chat_gguf(tmp_path: Path, smollm2_gguf: dict[str, Path]) -> Path:
    """smollm2 Q4_K_M (a chat template in its metadata) made from a source with sampling defaults."""
    source = tmp_path / "smollm2-src"
    source.mkdir()
    (source / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "repetition_penalty": 1.1}))
    out = tmp_path / "chat"
    out.mkdir()
    dest = out / "smollm2-Q4_K_M.gguf"
    os.link(smollm2_gguf["Q4_K_M"], dest)
    write_sidecar(dest, format="gguf:Q4_K_M", source=source, source_name="smollm2")
    return dest


# --------------------------------------------------------------------------- LM Studio


def test_lmstudio_hard_links_into_publisher_repository_layout(home: Path, gguf: Path):
    plan = plan_lmstudio(gguf)
    assert plan.target == home / ".lmstudio" / "models" / "quantdesk" / "tiny-GGUF" / "tiny-Q8_0.gguf"
    assert plan.method == "link"
    target = run_job(place_in_lmstudio(plan))
    assert target == plan.target and os.path.samefile(target, gguf)
    assert inspect_model(target).kind == "gguf"
    again = plan_lmstudio(gguf)  # the same file is already there: nothing to do
    assert again.method == "present"
    assert run_job(place_in_lmstudio(again)) == target


def test_lmstudio_refuses_to_overwrite_a_different_file(home: Path, gguf: Path):
    target = home / ".lmstudio" / "models" / "quantdesk" / "tiny-GGUF" / "tiny-Q8_0.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"someone else's file")
    with pytest.raises(QuantDeskError, match="different file"):
        plan_lmstudio(gguf)
    assert target.read_bytes() == b"someone else's file"


def test_lmstudio_folder_comes_from_its_settings_and_home_pointer(home: Path, tmp_path: Path):
    assert lmstudio_models_dir() == home / ".lmstudio" / "models"
    moved = tmp_path / "lmstudio-data"
    moved.mkdir()
    (home / ".lmstudio-home-pointer").write_text(str(moved))
    assert lmstudio_models_dir() == moved / "models"
    (moved / "settings.json").write_text(json.dumps({"downloadsFolder": str(tmp_path / "big-disk" / "models")}))
    assert lmstudio_models_dir() == tmp_path / "big-disk" / "models"
    assert lmstudio_models_dir(tmp_path / "mine") == tmp_path / "mine"


def test_lmstudio_copies_to_another_file_system_and_cancels_cleanly(home: Path, gguf: Path, tmp_path: Path):
    models = tmp_path / "other-disk"
    models.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(models)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        plan = plan_lmstudio(gguf, models)
        assert plan.method == "copy"
        cancel = CancelToken()
        job = place_in_lmstudio(plan, cancel)
        first = next(job)
        assert 0 < first.fraction < 1 and first.bytes_done
        cancel.cancel()
        with pytest.raises(JobCancelled):
            run_job(job)
        assert not plan.target.exists() and not list(models.rglob("*.part"))
        events = []
        target = run_job(place_in_lmstudio(plan_lmstudio(gguf, models)), events.append)
        assert target.read_bytes() == gguf.read_bytes() and not os.path.samefile(target, gguf)
        assert events[-1].fraction == 1.0 and any(0 < e.fraction < 1 for e in events)
        assert not list(models.rglob("*.part"))
    finally:
        subprocess.run(["umount", str(models)], check=False)


def test_export_lmstudio_command(home: Path, gguf: Path):
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "engine", "export", "lmstudio", str(gguf), "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout.splitlines()[-1])
    assert done["event"] == "done" and done["method"] == "link"
    assert Path(done["path"]).parent.parent.name == "quantdesk"


# --------------------------------------------------------------------------- Ollama


def test_ollama_modelfile_carries_template_stops_and_sampling(chat_gguf: Path):
    plan = plan_ollama(chat_gguf)
    assert plan.name == "smollm2:q4_k_m"
    assert plan.modelfile == chat_gguf.with_name("smollm2-Q4_K_M.gguf.Modelfile")
    text = plan.modelfile.read_text()
    assert text == plan.text
    lines = text.splitlines()
    assert "FROM ./smollm2-Q4_K_M.gguf" in lines
    assert 'TEMPLATE """' in text and "<|im_start|>" in text
    assert 'PARAMETER stop "<|im_end|>"' in lines
    for line in ("PARAMETER temperature 0.6", "PARAMETER top_p 0.95", "PARAMETER top_k 20",
                 "PARAMETER repeat_penalty 1.1"):
        assert line in lines
    assert plan.argv[1:] == ["create", "smollm2:q4_k_m", "-f", str(plan.modelfile)]
    assert plan.command == f"ollama create smollm2:q4_k_m -f {plan.modelfile}"


def test_ollama_never_overwrites_a_users_modelfile(gguf: Path):
    mine = gguf.with_name(gguf.name + ".Modelfile")
    mine.write_text("FROM ./tiny-Q8_0.gguf\nPARAMETER num_ctx 999\n")
    plan = plan_ollama(gguf)
    assert mine.read_text().endswith("999\n")
    assert plan.modelfile != mine and f"FROM {gguf}" in plan.modelfile.read_text()
    assert plan.notes


def test_ollama_without_ollama_gives_the_command(gguf: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    plan = plan_ollama(gguf)
    assert plan.ollama is None
    with pytest.raises(QuantDeskError, match="ollama create"):
        run_job(create_in_ollama(plan))


@pytest.mark.skipif(shutil.which("ollama") is None, reason="ollama is not installed here")
def test_ollama_create_for_real(chat_gguf: Path):
    plan = plan_ollama(chat_gguf, "quantdesk-test-smollm2:q4")
    events = []
    try:
        assert run_job(create_in_ollama(plan), events.append) == plan.name
        shown = subprocess.run(["ollama", "show", plan.name, "--modelfile"], capture_output=True, text=True)
        assert "temperature 0.6" in shown.stdout
    finally:
        subprocess.run(["ollama", "rm", plan.name], capture_output=True)


# --------------------------------------------------------------------------- llama-server


def test_llama_server_command_sizes_context_and_gpu_layers(smollm2_gguf: dict[str, Path]):
    path = smollm2_gguf["Q4_K_M"]
    model = inspect_model(path)
    cpu = server_command(path, free_vram=None)
    assert cpu.context == 4096 and cpu.gpu_layers == 0
    assert cpu.argv[:7] == ["llama-server", "-m", str(path.resolve()), "-c", "4096", "-ngl", "0"]
    roomy = server_command(path, free_vram=80 * 1024**3)
    assert roomy.gpu_layers == model.layers + 1  # every layer and the output layer
    small = server_command(path, free_vram=700 * 1024**2)
    assert 0 < small.gpu_layers < model.layers
    capped = server_command(path, ctx=10**6, free_vram=None)
    assert capped.context == model.context_length and capped.notes


def test_export_llama_server_command(smollm2_gguf: dict[str, Path]):
    proc = subprocess.run([sys.executable, "-m", "engine", "export", "llama-server", str(smollm2_gguf["Q4_K_M"]),
                           "--ctx", "2048", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["context"] == 2048 and " -c 2048 " in data["command"]
