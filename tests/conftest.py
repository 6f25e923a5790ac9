"""Test set-up: the kit must work offline, so any attempt to reach the network fails loudly."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.pop("LORAKIT_BASE", None)  # the tests run on the tiny model; test_base_model sets another base itself
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs in parallel: each worker (and its kernels) its own runs/
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["LORAKIT_RUNS"] = os.path.join(_root, "runs", f"test-{os.environ['PYTEST_XDIST_WORKER']}")

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}
_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo


class NetworkAccessError(RuntimeError):
    """Raised when code under test tries to reach a host other than this machine."""


def _is_local(host: object) -> bool:
    return isinstance(host, str) and (host in _LOCAL_HOSTS or host.startswith("127."))


def _guarded_connect(self: socket.socket, address):  # type: ignore[no-untyped-def]
    if self.family == socket.AF_UNIX or _is_local(address[0]):
        return _real_connect(self, address)
    raise NetworkAccessError(f"lorakit runs offline, but something tried to connect to {address!r}")


def _guarded_getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    if host is None or _is_local(host):
        return _real_getaddrinfo(host, *args, **kwargs)
    raise NetworkAccessError(f"lorakit runs offline, but something tried to look up {host!r}")


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]


# Tests that load the shipped pipeline, fit the pixel rules (3,200 VAE round trips, ~30 s the first time), train,
# or start a process or a browser: `make unit` leaves them out. Single slow tests carry @pytest.mark.slow.
SLOW_FIXTURES = {"pipe", "lab", "situations", "calibrated"}
SLOW_TESTS = {
    "test_pretrain_cli_end_to_end_and_resume", "test_pretrain_without_checkpoint_refuses_to_resume",
    "test_peak_training_memory_runs_in_a_fresh_process", "test_resuming_from_an_unreadable_checkpoint_says_how_to_start_afresh",
    "test_errors_exit_non_zero_from_a_shell", "test_train_classifier_writes_a_new_file", "test_make_lab_serves_the_notebooks",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.name.split("[")[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def classifier():
    from lorakit.classifier import load_classifier

    return load_classifier(device="cpu")


@pytest.fixture(scope="session")
def calibrated():
    from lorakit.pixels import calibration

    return calibration()


@pytest.fixture(scope="session")
def pipe():
    from lorakit.pipeline import load_pipeline

    return load_pipeline(device="cpu")


def snapshot(folder) -> dict[str, bytes]:
    """Every file under a folder, by relative path, with its bytes: to prove a refused write changed nothing."""
    from pathlib import Path

    root = Path(folder)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
