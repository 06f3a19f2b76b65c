"""A model whose forward detaches its output from the input (a hard threshold) has a zero input gradient: attacks
report it as masking instead of dying in autograd, and the audit measures its gates (issue 16: no exit 1 / no
unmeasured gate for a model we did not build)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from sparring import FGSM, PGD, InputSpec, TorchTarget
from sparring.attacks.evasion.apgd import APGD
from sparring.targets.load import load_target

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = InputSpec(shape=(8,), n_classes=2, bounds=(0.0, 1.0), layout="features")


class Threshold(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0] * 4 + [0.0] * 4, [0.0] * 4 + [1.0] * 4]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((x > 0.5).float())  # the comparison has no gradient: the output does not require grad


def _script(model: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():  # TorchScript warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(path))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 8, generator=g)
    y = (x[:, 4:] > 0.5).sum(1) > (x[:, :4] > 0.5).sum(1)
    return x, y.long()


@pytest.mark.parametrize("kind", ["eager", "script"])
def test_gradient_attacks_on_a_detached_output_report_zero_gradients(kind: str, tmp_path: Path) -> None:
    model: nn.Module = Threshold().eval()
    if kind == "script":
        _script(model, tmp_path / "m.pt")
    target = TorchTarget(model, SPEC) if kind == "eager" else load_target(str(tmp_path / "m.pt"), spec=SPEC)
    x, y = _data()
    for attack in (FGSM(eps=0.3), PGD(eps=0.3, steps=5), APGD(eps=0.3, steps=5)):
        r = attack(target, x, y)  # raised "element 0 of tensors does not require grad" before
        assert r.robust_accuracy == r.clean_accuracy  # nothing moves without a gradient
    pgd = PGD(eps=0.3, steps=5)(target, x, y)
    assert pgd.extras["zero_gradient_examples"] >= int(pgd.clean_correct.sum())  # every attacked point
    assert torch.equal(target.loss_gradient(x, y), torch.zeros_like(x))


def test_the_audit_measures_a_detached_threshold_model(tmp_path: Path) -> None:
    import numpy as np

    from sparring.audit import parse_threat_model, run_audit

    _script(Threshold().eval(), tmp_path / "m.pt")
    x, y = _data()
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    (tmp_path / "spec.json").write_text(__import__("json").dumps(SPEC.to_dict()), encoding="utf-8")
    tm = parse_threat_model({
        "schema_version": 1, "name": "threshold", "effort": "quick", "seed": 0,
        "system": {"model": str(tmp_path / "m.pt"), "spec": str(tmp_path / "spec.json"),
                   "data": {"source": str(tmp_path / "d.npz"), "n": 40}},
        "attacker": {"knowledge": "white-box", "evasion": [{"norm": "linf", "eps": [0.3]}]},
        "gates": [{"metric": "robust_accuracy", "norm": "linf", "eps": 0.3, "min": 0.0}],
    })
    audit = run_audit(tm, tmp_path / "out")
    assert not audit.errors, [r.error for r in audit.errors]
    (gate,) = audit.gates
    assert gate.value is not None and gate.status == "pass"
    # the straight-through retry breaks what the zero gradient hid: the gate is below the clean accuracy
    clean = float((Threshold().eval()(x).argmax(1) == y).float().mean())
    assert gate.value < clean
