"""Whether a download's server can be reached: asked once per server and minute, in at most PROBE_TIMEOUT_S.

The download clients wait far longer on a machine without network: huggingface_hub retries each file for about half
a minute, urllib and torch.hub wait for the system's connect timeout. One TCP connection, tried once (name lookup
included) before a download starts, tells at once; callers then fail in one line naming their local-file option.
Behind a proxy (``HTTPS_PROXY`` and the like, minus ``NO_PROXY``) the proxy is what is tried. For the Hugging Face
Hub, ``HF_HUB_OFFLINE=1`` counts as unreachable without trying, and ``hub_cache_only`` lets its client read what it
has cached without going to the network.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 2.0  # a server that takes longer to accept a connection counts as unreachable
ANSWER_TTL_S = 60.0  # an answer stands this long: one probe per command, yet a long session sees the network return
answers: dict[tuple[str, int], tuple[float, str | None]] = {}  # (host, port) -> (when, why unreachable or None)


def unreachable(url: str) -> str | None:
    """None if ``url``'s server (or the proxy for it) accepts a TCP connection within PROBE_TIMEOUT_S; otherwise
    why not, as a phrase (``"huggingface.co is unreachable: its name does not resolve"``). Asked once per
    ANSWER_TTL_S."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or "", proxied.port or (443 if proxied.scheme == "https" else 80)
    asked, why = answers.get((host, port), (-ANSWER_TTL_S, None))
    if time.monotonic() - asked >= ANSWER_TTL_S:
        why = _probe(host, port)
        answers[host, port] = time.monotonic(), why
    return why


def _probe(host: str, port: int) -> str | None:
    """One connection to ``host:port``; a name lookup that hangs is cut off at PROBE_TIMEOUT_S as well."""
    answer: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
            answer.append(None)
        except socket.gaierror:
            answer.append("its name does not resolve")
        except TimeoutError:
            answer.append(f"no answer in {PROBE_TIMEOUT_S:g} s")
        except OSError as err:
            answer.append((err.strerror or type(err).__name__).lower())

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S + 0.5)
    why = answer[0] if answer else f"no answer in {PROBE_TIMEOUT_S:g} s"
    return None if why is None else f"{host} is unreachable: {why}"


def hub_unreachable(endpoint: str | None = None) -> str | None:
    """None if the Hugging Face Hub at ``endpoint`` (default: huggingface_hub's, ``HF_ENDPOINT``) answers; why not
    otherwise, at once where ``HF_HUB_OFFLINE`` is set."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    return unreachable(endpoint or constants.ENDPOINT)


@contextmanager
def hub_cache_only(on: bool) -> Iterator[None]:
    """With ``on``, huggingface_hub reads its cache only, at once, without trying the network (nor logging each
    try); a file it has not cached fails in its own way (LocalEntryNotFoundError, or its callers' RuntimeError)."""
    if not on:
        yield
        return
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
        logging.disable(logging.NOTSET)


def torch_hub_unreachable(url: str) -> str | None:
    """None if torch.hub has cached the file at ``url`` (``$TORCH_HOME/hub/checkpoints``) or its server answers;
    why it cannot be downloaded otherwise."""
    import torch

    cached = Path(torch.hub.get_dir()) / "checkpoints" / PurePosixPath(urlsplit(url).path).name
    return None if cached.is_file() else unreachable(url)
