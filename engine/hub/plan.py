"""The plan before a download: what will be fetched, what it becomes here, and the disk it needs.

Only the file list (with sizes) and the small JSON files (config.json and the shard
index) are fetched. The model is then planned from its config alone, as
``quantdesk recommend config.json`` does, so a user sees the parameters, what fits
this machine and the recommended formats before a single weight byte arrives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError
from engine.hub import cache, select
from engine.hub.client import call_hub, is_offline, model_page, offline_sentence, request_timeout
from engine.inspect import ModelInfo
from engine.recommend import Recommendation
from engine.units import format_bytes

DISK_MARGIN = 64 * 1024**2  # the cache's own files, locks and refs


@dataclass
class HubFile:
    name: str
    size: int | None
    etag: str | None  # the cache's blob name: LFS sha256, else the git blob id
    lfs: bool
    present: int = 0  # bytes already in the cache (a finished blob or a partial)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "etag": self.etag, "lfs": self.lfs, "present": self.present}


@dataclass
class DownloadPlan:
    repo_id: str
    revision: str
    commit: str
    files: list[HubFile]
    cache_dir: Path
    model: ModelInfo
    recommendation: Recommendation
    intermediate_bytes: int  # the F16/BF16 GGUF that conversion writes on the way
    output_bytes: int  # the recommended output
    free_bytes: int | None
    token: str | None = field(default=None, repr=False)  # passed through, never written
    gated: bool = False
    left_out: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def download_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def present_bytes(self) -> int:
        return sum(f.present for f in self.files)

    @property
    def remaining_bytes(self) -> int:
        return max(0, self.download_bytes - self.present_bytes)

    @property
    def disk_needed_bytes(self) -> int:
        """Free disk for the rest of the download, the conversion's intermediate file and the output."""
        return self.remaining_bytes + self.intermediate_bytes + self.output_bytes

    @property
    def page(self) -> str:
        return model_page(self.repo_id)

    @property
    def snapshot(self) -> Path:
        return cache.snapshot_folder(self.repo_id, self.commit, self.cache_dir)

    def to_dict(self) -> dict[str, Any]:
        best = self.recommendation.best
        return {
            "repo_id": self.repo_id, "revision": self.revision, "commit": self.commit, "page": self.page,
            "cache_dir": str(self.cache_dir), "snapshot": str(self.snapshot), "gated": self.gated,
            "files": [f.to_dict() for f in self.files], "left_out": list(self.left_out),
            "download_bytes": self.download_bytes, "present_bytes": self.present_bytes,
            "remaining_bytes": self.remaining_bytes, "intermediate_bytes": self.intermediate_bytes,
            "output_bytes": self.output_bytes, "disk_needed_bytes": self.disk_needed_bytes,
            "free_bytes": self.free_bytes, "warnings": list(self.warnings),
            "model": {"architecture": self.model.architecture, "parameters": self.model.parameters,
                      "context_length": self.model.context_length, "dtype": self.model.dtype,
                      "gguf_convertible": self.model.gguf_convertible},
            "recommended": best.format if best else None,
            "recommendation": self.recommendation.to_dict(),
        }

    def summary(self) -> str:
        """The plan in a few plain lines, for a terminal or a dialog."""
        m, rec = self.model, self.recommendation
        lines = [
            f"{self.repo_id} @ {self.revision} ({self.commit[:10]})",
            f"  {m.architecture or 'unknown architecture'}, about {m.parameters / 1e9:.2f}B parameters"
            + (f", trained for {m.context_length:,} tokens" if m.context_length else ""),
            f"  download: {len(self.files)} files, {format_bytes(self.download_bytes)}"
            + (f" ({format_bytes(self.present_bytes)} already here)" if self.present_bytes else ""),
            f"  disk: about {format_bytes(self.disk_needed_bytes)} free needed (download "
            f"{format_bytes(self.remaining_bytes)} + conversion {format_bytes(self.intermediate_bytes)} + output "
            f"{format_bytes(self.output_bytes)}); {format_bytes(self.free_bytes)} free in {self.cache_dir}",
        ]
        options = [o for o in rec.options if o.available and o.fit != "no"][:3]
        if options:
            lines.append("  recommended here: " + ", ".join(
                f"{o.format.split(':', 1)[1]} ({format_bytes(o.size_bytes)}, {o.fit})" for o in options))
        else:
            lines.append("  nothing QuantDesk can make fits this machine at "
                         f"{rec.context:,} tokens; see quantdesk recommend for the details")
        if self.left_out:
            lines.append(f"  left out: {', '.join(self.left_out[:6])}" + (" …" if len(self.left_out) > 6 else ""))
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _siblings(info: Any) -> dict[str, HubFile]:
    found: dict[str, HubFile] = {}
    for s in info.siblings or []:
        lfs = s.lfs
        etag = (lfs.sha256 if lfs else None) or s.blob_id
        size = (lfs.size if lfs else None) or s.size
        found[s.rfilename] = HubFile(s.rfilename, size, etag, bool(lfs))
    return found


def _fetch_json(repo_id: str, filename: str, commit: str, token: str | None, root: Path, cancel: Any) -> Path:
    from huggingface_hub import hf_hub_download

    timeout = request_timeout()
    path = call_hub(lambda: hf_hub_download(repo_id, filename, revision=commit, cache_dir=root, token=token,
                                            etag_timeout=timeout),
                    f"fetching {filename}", repo_id, commit, cancel)
    return Path(path)


def _index_shards(path: Path) -> list[str]:
    try:
        if path.stat().st_size > 64 * 1024**2:
            raise ValueError("too large")
        weight_map = json.loads(path.read_text(encoding="utf-8")).get("weight_map") or {}
        shards = {str(v) for v in weight_map.values()}
    except (OSError, ValueError, AttributeError):
        raise QuantDeskError(f"{path.name} on the Hub is not a valid shard index; the repository looks broken.") from None
    if not shards or any("/" in s or s.startswith(".") for s in shards):
        raise QuantDeskError(f"{path.name} on the Hub names no usable shards; the repository looks broken.")
    return sorted(shards)


def plan_download(repo_id: str, revision: str | None = None, token: str | None = None, *,
                  ctx: int | None = None, machine: Any = None, cancel: Any = None) -> DownloadPlan:
    """Plan getting ``repo_id``: raises one QuantDeskError sentence for anything that would stop it."""
    from engine.estimate import weights_bytes
    from engine.formats import FORMATS
    from engine.fsutil import disk_free
    from engine.gguf_converter import is_supported
    from engine.inspect import inspect_model
    from engine.recommend import recommend

    repo_id = repo_id.strip().strip("/")
    revision = revision or "main"
    if is_offline():
        raise QuantDeskError(offline_sentence())
    from huggingface_hub import HfApi
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except Exception as err:  # noqa: BLE001 - HFValidationError: one sentence
        raise QuantDeskError(
            f"'{repo_id}' is not a repository name; write it as publisher/model, e.g. Qwen/Qwen2.5-1.5B-Instruct."
        ) from err
    root = cache.cache_root()
    api = HfApi(token=token)
    timeout = request_timeout()
    info = call_hub(lambda: api.model_info(repo_id, revision=revision, files_metadata=True, timeout=timeout),
                    "reading the file list", repo_id, revision, cancel)
    commit = info.sha or revision
    remote = _siblings(info)
    names = sorted(remote)
    if select.CONFIG not in names:
        if select.gguf_files(names):
            raise QuantDeskError(
                f"{repo_id} holds GGUF files, not a Hugging Face model; download the .gguf you want from "
                f"{model_page(repo_id)} and open it in QuantDesk."
            )
        raise QuantDeskError(f"{repo_id} has no config.json at its top level, so it is not a model QuantDesk can use.")
    index_shards = None
    if select.INDEX in names:
        index_shards = _index_shards(_fetch_json(repo_id, select.INDEX, commit, token, root, cancel))
        missing = [s for s in index_shards if s not in remote]
        if missing:
            raise QuantDeskError(
                f"{repo_id}'s shard index names {missing[0]}, which the repository does not have; it looks broken."
            )
    weights = select.safetensors_files(names, index_shards)
    if not weights:
        pickles = select.pickle_files(names)
        if pickles:
            raise QuantDeskError(
                f"{repo_id} has only pickle weights ({pickles[0]}…), which can run code when loaded; "
                "choose a version of the model with .safetensors files."
            )
        raise QuantDeskError(f"{repo_id} has no weights QuantDesk can use (no .safetensors files).")
    config_path = _fetch_json(repo_id, select.CONFIG, commit, token, root, cancel)
    wanted = sorted(set(weights) | set(select.support_files(names)))
    files = [remote[n] for n in wanted]
    for f in files:
        f.present = cache.bytes_present(repo_id, f.etag, f.size, root)
    model = inspect_model(config_path)
    model.has_tokenizer = any(n in wanted for n in ("tokenizer.json", "tokenizer.model", "spiece.model",
                                                    "tiktoken.model", "vocab.json"))
    model.has_chat_template = any(n in wanted for n in ("chat_template.jinja", "chat_template.json"))
    model.weight_files = list(weights)
    model.bytes_on_disk = sum(remote[n].size or 0 for n in weights)
    if machine is None:
        from engine.hardware import detect_machine

        machine = detect_machine()
    rec = recommend(model, machine, ctx)
    warnings: list[str] = []
    try:
        convertible = bool(model.architecture) and is_supported(model.architecture)
    except QuantDeskError:
        convertible = False
    intermediate = 0
    if convertible:
        intermediate = weights_bytes(model, FORMATS["gguf:BF16" if (model.dtype or "") == "bf16" else "gguf:F16"])
    else:
        warnings.append(
            f"llama.cpp's converter does not support {model.architecture or 'this architecture'}, so GGUF "
            "formats are not possible; bitsandbytes formats still are."
        )
    if not model.has_tokenizer:
        warnings.append("The repository has no tokenizer files; QuantDesk cannot convert or chat without them.")
    best = next((o for o in rec.options if o.available), rec.best)
    output = best.size_bytes if best is not None and best.format != "hf:fp16" else 0
    free = disk_free(root)
    plan = DownloadPlan(
        repo_id=repo_id, revision=revision, commit=commit, files=files, cache_dir=root, model=model,
        recommendation=rec, intermediate_bytes=intermediate, output_bytes=output, free_bytes=free, token=token,
        gated=bool(getattr(info, "gated", False)), left_out=[n for n in names if n not in wanted],
        warnings=warnings,
    )
    if free is not None and plan.remaining_bytes + DISK_MARGIN > free:
        raise QuantDeskError(
            f"Not enough free disk space in {root}: the download needs {format_bytes(plan.remaining_bytes)} but only "
            f"{format_bytes(free)} is free; free some space or point HF_HOME at a bigger disk."
        )
    if free is not None and plan.disk_needed_bytes + DISK_MARGIN > free:
        warnings.append(
            f"The download fits, but converting and quantizing need about {format_bytes(plan.disk_needed_bytes)} "
            f"in all and {format_bytes(free)} is free here; write the outputs to another disk or free some space."
        )
    return plan
