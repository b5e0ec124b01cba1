"""Fixtures for the Hub tests: a fake Hub serving the tiny test model, and a clean environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub.fakehub import FakeHub, Repo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub(tiny_dir: Path):
    files = Repo.from_folder(tiny_dir).files
    bin_only = {k: v for k, v in files.items() if k != "model.safetensors"}
    bin_only["pytorch_model.bin"] = files["model.safetensors"]
    repos = {
        "quantdesk-test/tiny": Repo(dict(files)),
        "quantdesk-test/gated": Repo(dict(files), gated=True),
        "quantdesk-test/bin-only": Repo(bin_only),
    }
    with FakeHub(repos) as server:
        yield server


def hub_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """An environment where huggingface_hub reads the fake Hub and a cache under tmp_path."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_")) and k not in ("TRANSFORMERS_OFFLINE",)}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update({"HOME": str(home), "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": endpoint,
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1", "PYTHONPATH": str(ROOT),
                "NO_PROXY": "*", "no_proxy": "*"})
    env.update(extra)
    return env


def get_cmd(repo_id: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "engine", "get", repo_id, "--yes", "--json", *args]


def run_get(tmp_path: Path, endpoint: str, repo_id: str, *args: str, timeout: float = 120, **env: str):
    proc = subprocess.run(get_cmd(repo_id, *args), capture_output=True, text=True, timeout=timeout,
                          env=hub_env(tmp_path, endpoint, **env), cwd=ROOT)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, events
