"""The few huggingface_hub calls QuantDesk makes, each bounded in time, each error one sentence.

Network calls run on a daemon thread with a deadline, so a dead network or a
resolver that never answers ends in a sentence instead of a hang, and a cancel
is honoured within a fraction of a second.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from engine.errors import JobCancelled, QuantDeskError

T = TypeVar("T")

DEADLINE_S = 60.0  # one metadata call, retries included
_TRUE = {"1", "ON", "YES", "TRUE"}


def request_timeout() -> float:
    """Seconds to wait for the Hub to answer one request (huggingface_hub's own setting, 10 by default)."""
    from huggingface_hub import constants

    return float(max(constants.HF_HUB_ETAG_TIMEOUT, constants.HF_HUB_DOWNLOAD_TIMEOUT))


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def model_page(repo_id: str) -> str:
    """The model's page, where a gated model's licence is accepted."""
    return f"{endpoint()}/{repo_id}"


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, now or when it was imported."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if value.upper() in _TRUE:
        return True
    from huggingface_hub import constants

    return constants.is_offline_mode()


def offline_sentence() -> str:
    return ("HF_HUB_OFFLINE=1 is set, so QuantDesk may not reach the Hugging Face Hub; unset it to download, "
            "or open a model that is already on disk.")


def bounded(call: Callable[[], T], what: str, *, deadline_s: float = DEADLINE_S, cancel: Any = None) -> T:
    """Run ``call`` on a daemon thread; one sentence when it does not finish in ``deadline_s``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as err:  # noqa: BLE001 - handed back to the caller's thread
            box["error"] = err

    worker = threading.Thread(target=target, name=f"quantdesk-hub-{what}", daemon=True)
    worker.start()
    waited = 0.0
    while worker.is_alive() and waited < deadline_s:
        worker.join(0.1)
        waited += 0.1
        if cancel is not None and cancel.cancelled:
            raise JobCancelled()
    if worker.is_alive():
        raise QuantDeskError(
            f"The Hugging Face Hub did not answer within {deadline_s:.0f} s ({what}); "
            "check your internet connection and try again."
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


def translate(err: BaseException, repo_id: str, revision: str | None = None) -> QuantDeskError:
    """One sentence for whatever huggingface_hub or the network raised."""
    from huggingface_hub import errors as hf

    if isinstance(err, QuantDeskError):
        return err
    page = model_page(repo_id)
    if isinstance(err, hf.OfflineModeIsEnabled):
        return QuantDeskError(offline_sentence())
    if isinstance(err, hf.GatedRepoError):
        return QuantDeskError(
            f"{repo_id} is gated: accept its licence at {page} while logged in, then log in here "
            "(a Hugging Face token: the window's token field, HF_TOKEN, --token or hf auth login) and try again."
        )
    if isinstance(err, hf.RevisionNotFoundError):
        return QuantDeskError(f"{repo_id} has no revision '{revision}'; check the branch, tag or commit at {page}.")
    if isinstance(err, hf.RepositoryNotFoundError):
        return QuantDeskError(
            f"No model {repo_id} on the Hugging Face Hub (or it is private and this login cannot see it); "
            "check the name, or log in (a Hugging Face token: the window's token field, HF_TOKEN, --token or hf auth login) if it is private."
        )
    if isinstance(err, hf.DisabledRepoError):
        return QuantDeskError(f"{repo_id} has been disabled on the Hub; choose another model.")
    if isinstance(err, hf.HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            return QuantDeskError(
                "The Hub refused the token (invalid credentials); enter a valid token (the window's token field, HF_TOKEN, --token or hf auth login) or check "
                "HF_TOKEN / --token."
            )
        if status == 403:
            return QuantDeskError(
                f"The Hub refused access to {repo_id} (403); accept its licence at {page} and make sure the "
                "token may read gated repositories, then try again."
            )
        if status == 429:
            return QuantDeskError("The Hub is rate-limiting this connection (429); wait a few minutes and try again.")
        return QuantDeskError(f"The Hub answered with an error ({status}); try again in a few minutes.")
    if isinstance(err, hf.LocalEntryNotFoundError):
        return QuantDeskError(
            "Cannot reach the Hugging Face Hub and the file is not in the cache; check your internet connection."
        )
    if isinstance(err, hf.HFValidationError):
        return QuantDeskError(
            f"'{repo_id}' is not a repository name; write it as publisher/model, e.g. Qwen/Qwen2.5-1.5B-Instruct."
        )
    import httpx2

    if isinstance(err, httpx2.TimeoutException):
        return QuantDeskError("The Hugging Face Hub did not answer in time; check your internet connection and try again.")
    if isinstance(err, (httpx2.TransportError, OSError)) and not isinstance(err, PermissionError):
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return QuantDeskError(
            f"Cannot reach the Hugging Face Hub at {endpoint()} ({detail}); check your internet connection."
        )
    return QuantDeskError(f"The download failed: {type(err).__name__}: {err}")


def call_hub(call: Callable[[], T], what: str, repo_id: str, revision: str | None = None, cancel: Any = None) -> T:
    """``bounded`` plus ``translate``: every failure leaves as one QuantDeskError."""
    try:
        return bounded(call, what, cancel=cancel)
    except QuantDeskError:
        raise
    except Exception as err:  # noqa: BLE001 - translated into one sentence
        raise translate(err, repo_id, revision) from None
