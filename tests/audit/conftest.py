"""Small threat models that run in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

SMALL: dict[str, Any] = {
    "schema_version": 1,
    "name": "small test audit",
    "system": {"model": "digits-cnn", "data": {"source": "zoo", "split": "test", "n": 24}},
    "attacker": {"knowledge": "white-box", "evasion": [{"norm": "linf", "eps": [0.05, 0.15]}]},
    "certification": {"smoothing": {"sigma": 0.25, "n0": 8, "n": 32, "radii": [0.0, 0.25]}},
    "effort": "quick",
    "gates": [{"metric": "clean_accuracy", "min": 0.8}],
    "seed": 0,
}


def write_tm(path: Path, **overrides: Any) -> Path:
    """Write SMALL (with top-level keys replaced by ``overrides``) to ``path``."""
    data = {**SMALL, **overrides}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def small_tm(tmp_path: Path) -> Path:
    return write_tm(tmp_path / "threat.yaml")


@pytest.fixture(scope="module", autouse=True)
def _audits_on_one_thread(one_thread: None) -> None:
    """Audits are many small sequential steps on tiny models: one intra-op thread for every module here (see
    ``one_thread`` in tests/conftest.py; the format audits took 15-35 s with two threads, 2-3 s with one)."""
