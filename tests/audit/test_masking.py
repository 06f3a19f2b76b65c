"""Gradient masking in an audit: the sanity checks flag a quantising or noisy model, and the automatic BPDA/EOT retry
drives robust accuracy down to (near) the undefended model's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparring import PGD
from sparring.audit import parse_threat_model, run_audit
from sparring.data import Dataset
from sparring.targets import TorchTarget

N = 48


class Quantize(nn.Module):
    """Rounds inputs to ``levels`` grey levels: non-differentiable (zero gradient almost everywhere)."""

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)


class Noise(nn.Module):
    """Adds Gaussian noise on every forward pass, in eval mode too (a randomized defence)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sigma * torch.randn_like(x)


def _tm() -> Any:
    return parse_threat_model({
        "system": {"model": "in-memory defended digits CNN", "data": {"n": N}},
        "attacker": {"evasion": [{"norm": "linf", "eps": [0.1]}]},
        "effort": "quick",
        "gates": [{"metric": "robust_accuracy", "norm": "linf", "eps": 0.1, "min": 0.5}],
    })


def _step(audit: Any, step_id: str) -> Any:
    return next(r for r in audit.results if r.step_id == step_id)


def test_quantised_input_is_flagged_and_the_bpda_retry_breaks_it(
    tmp_path: Path, digits_cnn: TorchTarget, digits: Dataset
) -> None:
    x, y = digits.x_test[:N], digits.y_test[:N]
    undefended = PGD(eps=0.1, steps=20)(digits_cnn, x, y).robust_accuracy
    defended = TorchTarget(nn.Sequential(Quantize(8), digits_cnn.model), digits_cnn.spec)
    audit = run_audit(_tm(), tmp_path, target=defended, data=(x, y))

    clean = _step(audit, "baseline/clean").value("clean_accuracy")
    naive = _step(audit, "evasion/pgd/linf/0.1").value("robust_accuracy")
    assert naive >= clean - 0.1 > undefended + 0.3  # naive PGD sees no gradient: the model looks robust
    ids = {f.id for f in audit.findings}
    assert "masking:gradients" in ids  # the zero-gradient check fires
    retry = _step(audit, "adaptive/pgd/linf/0.1")
    assert any("BPDA" in n for n in retry.notes)
    assert retry.value("robust_accuracy") <= undefended + 0.1
    gate = audit.gates[0]
    assert gate.value is not None and gate.value <= undefended + 0.1 and gate.status == "fail"
    assert "adaptive/pgd/linf/0.1" in gate.steps
    retry_finding = next(f for f in audit.findings if f.id == "masking:retry")
    assert retry_finding.severity == "high" and "overstated" in retry_finding.title


def test_noisy_model_is_flagged_and_the_eot_retry_breaks_it(
    tmp_path: Path, digits_cnn: TorchTarget, digits: Dataset
) -> None:
    x, y = digits.x_test[:N], digits.y_test[:N]
    undefended = PGD(eps=0.1, steps=20)(digits_cnn, x, y).robust_accuracy
    torch.manual_seed(0)  # the defence draws from the global RNG, as such models do
    defended = TorchTarget(nn.Sequential(Noise(0.3), digits_cnn.model), digits_cnn.spec)
    audit = run_audit(_tm(), tmp_path, target=defended, data=(x, y))
    # Single noisy passes make the naive numbers unreliable (either way): the randomness check says so ...
    assert "masking:randomness" in {f.id for f in audit.findings}
    # ... and the EOT retry, judged on the expected prediction over 20 draws, is close to the undefended model.
    retry = _step(audit, "adaptive/pgd/linf/0.1")
    assert any("EOT" in n for n in retry.notes)
    assert retry.value("robust_accuracy") <= undefended + 0.1


def test_an_undefended_model_triggers_no_masking_finding(tmp_path: Path, digits_cnn: TorchTarget,
                                                         digits: Dataset) -> None:
    audit = run_audit(_tm(), tmp_path, target=digits_cnn, data=(digits.x_test, digits.y_test))
    assert not [f for f in audit.findings if f.id.startswith("masking")]
    assert not [r for r in audit.results if r.check == "adaptive-retry"]
