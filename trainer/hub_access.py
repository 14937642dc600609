"""Is a Hugging Face model on this machine, and can the hub be reached? Answered at once.

huggingface_hub retries a failed request with back-off (`_http_backoff_base`: 5 retries, waits of
1, 2, 4, 8 and 8 s) and transformers asks once per file, so a model that is not cached on a machine
without network used to cost about half a minute of silent retries before its error. Callers look
here first: a complete cached snapshot is loaded as a local folder (no network at all), an offline
setting or an unreachable hub is an error at once, and only a reachable hub is left to download.
Cheap: no torch, no transformers.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_SECONDS = 3.0
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def offline_variable() -> str | None:
    """The name of the offline switch that is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE), or None."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return name
    return None


def cached_snapshot(repo_id: str, needs: tuple[str | tuple[str, ...], ...] = ()) -> Path | None:
    """The cached snapshot folder of `repo_id` (its default revision) when it holds config.json, a
    weights file and each of `needs` (a file name, or a tuple of alternatives), else None. Never
    touches the network."""
    try:
        from huggingface_hub import try_to_load_from_cache  # huggingface_hub: only when a hub model is named
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id or cache is "not cached", never a crash here
        return None
    if not isinstance(found, str):
        return None
    folder = Path(found).parent
    groups = [WEIGHT_FILES] + [(n,) if isinstance(n, str) else n for n in needs]
    if all(any((folder / name).is_file() for name in group) for group in groups):
        return folder
    return None


def hub_host() -> str:
    """The hub's host name (HF_ENDPOINT, else huggingface.co)."""
    return urlsplit(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).hostname or "huggingface.co"


def unreachable_reason(timeout: float = PROBE_SECONDS) -> str | None:
    """Why the hub (or the HTTPS proxy in front of it) cannot be reached, or None when a TCP connection
    to it opens within `timeout` seconds. One attempt, no retries."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("ALL_PROXY") \
        or os.environ.get("all_proxy")
    url = urlsplit(proxy if proxy else (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT))
    host = url.hostname
    if not host:
        return None  # nothing to probe: let the download say what is wrong
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"cannot resolve {host}"
    except TimeoutError:
        return f"no answer from {host} within {timeout:g} s"
    except OSError as e:
        return f"{host}: {e.strerror or e}"
