"""Shared fixtures: zoo models trained once per test session into a private cache directory."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from sparring import zoo
from sparring.data import Dataset
from sparring.targets import TorchTarget

# The plugin a user's project enables the same way: it registers the `robustness` marker.
pytest_plugins = ["sparring.testing"]


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every run trains the zoo into its own cache dir: hermetic, and never touches the user's cache.

    A developer running small targeted test selections repeatedly may set SPARRING_TEST_CACHE_DIR to a directory
    that test runs share (the zoo's files are written atomically and checksummed), so the zoo is trained once; CI
    and scripts/test.sh leave it unset."""
    old = os.environ.get("SPARRING_CACHE_DIR")
    shared = os.environ.get("SPARRING_TEST_CACHE_DIR")
    os.environ["SPARRING_CACHE_DIR"] = shared or str(tmp_path_factory.mktemp("sparring-cache"))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield
    if old is None:
        os.environ.pop("SPARRING_CACHE_DIR", None)
    else:
        os.environ["SPARRING_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny models and
    many small sequential steps, where a second thread on a busy 2-core machine only spins (measured: C&W on 32
    digits 56 s with 2 threads under load, 3 s with 1; Square L2 45 s vs 2.5 s)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def digits_cnn() -> TorchTarget:
    t = zoo.load("digits-cnn")
    assert isinstance(t, TorchTarget)
    return t


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return zoo.data("digits-cnn")


@pytest.fixture(scope="session")
def digits_batch(digits: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """128 test digits (1×28×28 in [0, 1]) and their labels."""
    return digits.x_test[:128], digits.y_test[:128]
