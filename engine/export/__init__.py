"""Handing a GGUF on to the chat apps people already use: LM Studio, Ollama and llama.cpp's server.

- ``lmstudio``: place the file in LM Studio's models folder (publisher/repository/file.gguf),
  hard-linked when it can be, else copied as a job; never over a different file.
- ``ollama``: a Modelfile with the chat template, stop tokens and the source's sampling
  defaults, and ``ollama create`` run as a job (or the exact command to copy).
- ``llama_server``: the ``llama-server`` command with the context and GPU layers that fit here.
"""

from __future__ import annotations

from engine.export.llama_server import ServerCommand, server_command
from engine.export.lmstudio import LmStudioPlan, lmstudio_models_dir, place_in_lmstudio, plan_lmstudio
from engine.export.ollama import OllamaPlan, create_in_ollama, plan_ollama

__all__ = ["LmStudioPlan", "OllamaPlan", "ServerCommand", "create_in_ollama", "lmstudio_models_dir",
           "place_in_lmstudio", "plan_lmstudio", "plan_ollama", "server_command"]
