"""Is the Hugging Face hub reachable? One short probe before any download, so an offline machine fails in about a
second with one clear error instead of after half a minute of retries.

``HF_HUB_OFFLINE=1`` (huggingface_hub's own switch) means offline without probing. Otherwise a TCP connection to
the endpoint (``HF_ENDPOINT``, default huggingface.co:443; the ``HTTPS_PROXY`` when one is set) is tried with a
one-second budget, name lookup included; the answer is remembered for a minute.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from urllib.parse import urlparse

from xlens.errors import HubError

PROBE_TIMEOUT_S = 1.0
_REMEMBER_S = 60.0
_last: tuple[float, str, bool] | None = None


def hub_offline_by_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _endpoint() -> tuple[str, int]:
    """Where a download would connect first: the HTTPS proxy when one is set, else the hub endpoint."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def _connects(host: str, port: int, timeout: float) -> bool:
    # getaddrinfo has no timeout of its own: run the whole attempt in a thread and stop waiting after `timeout`.
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when the hub answers a TCP connection within ``timeout`` seconds (False under ``HF_HUB_OFFLINE``)."""
    global _last
    if hub_offline_by_env():
        return False
    host, port = _endpoint()
    now = time.monotonic()
    if _last is not None and _last[1] == f"{host}:{port}" and now - _last[0] < _REMEMBER_S:
        return _last[2]
    ok = _connects(host, port, timeout)
    _last = (now, f"{host}:{port}", ok)
    return ok


def unreachable(what: str, fix: str) -> HubError:
    """The one error for 'the hub is needed and cannot be reached'."""
    why = "HF_HUB_OFFLINE is set" if hub_offline_by_env() else f"{':'.join(map(str, _endpoint()))} does not answer"
    return HubError(
        f"{what} needs the Hugging Face hub, which is unreachable ({why}), and is not cached locally. {fix}"
    )
