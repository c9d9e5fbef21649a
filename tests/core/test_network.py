"""saqt.core.network: one quick probe per server, over real local sockets (no test needs the internet)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import huggingface_hub.constants
import pytest

from saqt.core import network


@pytest.fixture(autouse=True)
def no_proxy_of_this_machine(monkeypatch):
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def listening() -> Iterator[int]:
    """A port that accepts connections."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@contextmanager
def never_accepting() -> Iterator[int]:
    """A port whose backlog is full: the kernel drops further connection requests unanswered, as a black-holed
    network does, so a client waits for its own timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the backlog
            yield port


def test_a_refused_connection_is_told_at_once():
    started = time.monotonic()
    why = network.unreachable(f"http://127.0.0.1:{closed_port()}/weights.pth")
    assert time.monotonic() - started < 1
    assert why == "127.0.0.1 is unreachable: connection refused"


def test_a_server_that_never_accepts_is_given_up_after_the_probe_timeout(monkeypatch):
    monkeypatch.setattr(network, "PROBE_TIMEOUT_S", 0.5)
    with never_accepting() as port:
        started = time.monotonic()
        why = network.unreachable(f"https://127.0.0.1:{port}/x")
        elapsed = time.monotonic() - started
    assert why == "127.0.0.1 is unreachable: no answer in 0.5 s"
    assert 0.4 < elapsed < 1.5


def test_a_server_is_asked_once_until_its_answer_expires(monkeypatch):
    monkeypatch.setattr(network, "ANSWER_TTL_S", 0.5)
    with listening() as port:
        assert network.unreachable(f"http://127.0.0.1:{port}/a") is None
        assert network.unreachable(f"http://127.0.0.1:{closed_port()}/a") is not None  # another port is asked
    assert network.unreachable(f"http://127.0.0.1:{port}/b") is None  # closed now, but the answer stands
    time.sleep(0.6)
    assert network.unreachable(f"http://127.0.0.1:{port}/b") == "127.0.0.1 is unreachable: connection refused"


def test_behind_a_proxy_the_proxy_is_asked(monkeypatch):
    url = "http://saqt-test-host.invalid/weights.pth"  # .invalid never resolves
    assert network.unreachable(url) == "saqt-test-host.invalid is unreachable: its name does not resolve"
    with listening() as port:
        monkeypatch.setattr(network, "answers", {})
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        assert network.unreachable(url) is None
        monkeypatch.setattr(network, "answers", {})
        monkeypatch.setenv("NO_PROXY", "saqt-test-host.invalid")  # not through the proxy: the host itself
        assert network.unreachable(url) == "saqt-test-host.invalid is unreachable: its name does not resolve"


def test_hub_offline_mode_is_unreachable_without_asking(monkeypatch):
    with listening() as port:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        assert network.hub_unreachable() is None
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        assert network.hub_unreachable() == "HF_HUB_OFFLINE is set"


def test_hub_cache_only_switches_the_hub_client_offline_and_back(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with network.hub_cache_only(True):
        assert huggingface_hub.constants.is_offline_mode()
    assert not huggingface_hub.constants.is_offline_mode()
    with network.hub_cache_only(False):
        assert not huggingface_hub.constants.is_offline_mode()


def test_a_file_torch_hub_has_cached_needs_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = f"http://127.0.0.1:{closed_port()}/models/resnet50-19c8e357.pth"
    assert network.torch_hub_unreachable(url) == "127.0.0.1 is unreachable: connection refused"
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "resnet50-19c8e357.pth").write_bytes(b"cached")
    assert network.torch_hub_unreachable(url) is None
