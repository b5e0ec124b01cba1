"""Getting a model from the Hugging Face Hub by name: plan first, then a resumable download.

- ``plan_download(repo_id, revision, token) -> DownloadPlan``: the file list, sizes and
  config.json alone, QuantDesk's recommendation for this machine and the disk it needs;
  every problem a user can meet (not found, gated, pickle only, no disk, offline) is one
  sentence here, before any large download.
- ``download(plan, cancel) -> Job[Path]``: the files into the standard Hugging Face
  cache, resumable after a cancel or a dropped connection; returns the snapshot folder.

huggingface_hub is imported inside the functions, so importing this package is cheap.
"""

from __future__ import annotations

from engine.hub.download import download
from engine.hub.plan import DownloadPlan, HubFile, plan_download

__all__ = ["DownloadPlan", "HubFile", "download", "plan_download"]
