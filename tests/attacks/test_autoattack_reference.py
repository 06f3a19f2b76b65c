"""sparring's AutoAttack against the authors' code (issue 16 item 6): ``pyautoattack`` 0.2.0, the reference
AutoAttack of Croce & Hein (2020) packaged, standard version, on the same points and budgets.

Slow (minutes per case on one CPU thread; ``-m slow``), and skipped when ``pyautoattack`` is not installed
(``scripts/setup.sh --dev`` installs it from requirements-dev.lock). The benchmark
``benchmarks/bench_autoattack_reference.py`` runs the same comparison on 200 points and times it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("pyautoattack")

N = 100  # the first 100 test digits (the benchmark uses 200)
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_autoattack_reference.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_autoattack_reference", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("model", ["digits-cnn-pgdat", "digits-cnn"])
def test_sparring_leaves_at_most_one_point_more_robust_than_the_reference(model: str, norm: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = _bench().compare(model, norm, N, 1, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    extra, fewer = res["robust_only_under_sparring"], res["robust_only_under_reference"]
    assert len(extra) <= 1, (
        f"{model} {norm} eps {res['eps']}: sparring leaves {len(extra)} points robust that the reference breaks "
        f"(test indices {extra}); the reference leaves {fewer} robust that sparring breaks; robust "
        f"{res['robust_sparring']} vs {res['robust_reference']} of {N}"
    )
    assert res["robust_sparring"] <= res["robust_reference"] + 1
