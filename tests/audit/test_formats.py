"""Every model format a user ships goes through ``sparring audit`` (default plan, and the masking retry where the
model masks its gradients) without a crash: TorchScript (scripted and traced), ``torch.export``, ONNX, a state dict
with its entry point, and skops. The models are trained and saved here, outside the zoo."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

from sparring.cli import EXIT_OK, build_cli
from sparring.data import Dataset, load_digits

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, many small steps: a 2nd thread only spins
N = 16
LEVELS = 4  # grey levels of the input quantisation (written as 3.0 = LEVELS - 1 in forward: TorchScript)


class RoundMLP(nn.Module):
    """An MLP on 8×8 digits that quantises its input to ``LEVELS`` grey levels inside ``forward`` (gradient zero)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.round(x * 3.0) / 3.0  # LEVELS grey levels
        return self.net(q)  # type: ignore[no-any-return]


class NoisyMLP(nn.Module):
    """The same MLP with Gaussian noise on its input inside ``forward``: a randomized model (needs EOT)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + 0.3 * torch.randn_like(x))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def digits8() -> Dataset:
    return load_digits(8)


@pytest.fixture(scope="module")
def trained(digits8: Dataset) -> RoundMLP:
    torch.manual_seed(0)
    model = RoundMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(digits8.x_train), digits8.y_train).backward()
        opt.step()
    return model.eval()


def _save(fmt: str, model: RoundMLP, ds: Dataset, d: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Save ``model`` as ``fmt``; return the file, its spec and extra ``system`` keys."""
    x2 = ds.x_test[:2]
    spec = ds.spec.to_dict()
    with warnings.catch_warnings():  # TorchScript and the legacy ONNX exporter warn that they are deprecated
        warnings.simplefilter("ignore")
        if fmt == "script":
            torch.jit.script(model).save(str(d / "m.pt"))
            return d / "m.pt", spec, {}
        if fmt == "script-noise":
            torch.jit.script(NoisyMLP(model.net)).save(str(d / "m.pt"))
            return d / "m.pt", spec, {}
        if fmt == "trace":
            torch.jit.trace(model, x2).save(str(d / "m.pt"))
            return d / "m.pt", spec, {}
        if fmt == "export":
            ep = torch.export.export(model, (x2,), dynamic_shapes=({0: torch.export.Dim("batch")},))
            torch.export.save(ep, str(d / "m.pt2"))
            return d / "m.pt2", spec, {}
        if fmt == "state-dict":
            torch.save(model.state_dict(), d / "m.pth")
            return d / "m.pth", spec, {"entry_point": f"{__name__}:RoundMLP"}
        if fmt == "onnx":
            torch.onnx.export(model, (x2,), str(d / "m.onnx"), input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
            return d / "m.onnx", spec, {}
    import skops.io
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=300).fit(ds.x_train.reshape(len(ds.x_train), -1).numpy(), ds.y_train.numpy())
    skops.io.dump(clf, d / "m.skops")
    return d / "m.skops", {**spec, "shape": [64], "layout": "features"}, {}


@pytest.mark.parametrize("fmt", ["script", "trace", "export", "state-dict", "onnx", "skops",  # 2-3 s each
                                 "script-noise"])
def test_every_model_format_goes_through_the_audit_and_the_retry(
    tmp_path: Path, digits8: Dataset, trained: RoundMLP, fmt: str
) -> None:
    path, spec, extra = _save(fmt, trained, digits8, tmp_path)
    (tmp_path / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    x = digits8.x_test[:N].numpy()
    np.savez(tmp_path / "data.npz", x=x.reshape(N, -1) if fmt == "skops" else x, y=digits8.y_test[:N].numpy())
    tm = {"schema_version": 1, "name": f"{fmt} audit",
          "system": {"model": str(path), "spec": str(tmp_path / "spec.json"),
                     "data": {"source": str(tmp_path / "data.npz"), "n": N}, **extra},
          "attacker": {"evasion": [{"norm": "linf", "eps": [0.1]}]}, "effort": "quick",
          "gates": [{"metric": "robust_accuracy", "norm": "linf", "eps": 0.1, "min": 0.0}]}
    (tmp_path / "tm.yaml").write_text(yaml.safe_dump(tm), encoding="utf-8")
    torch.manual_seed(0)  # the noisy model draws from the global RNG, as such models do
    r = CliRunner().invoke(build_cli(), ["audit", str(tmp_path / "tm.yaml"), "--out", str(tmp_path / "out"),
                                         "--no-progress"])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    assert r.exit_code == EXIT_OK, r.output
    data = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert data["errors"] == 0, [(s["id"], s["error"]) for s in data["steps"] if s["status"] == "error"]
    assert all((tmp_path / "out" / f).exists() for f in ("report.html", "summary.md", "junit.xml"))
    ids = {s["id"] for s in data["steps"]}
    if fmt in ("script", "trace", "export", "state-dict"):  # white-box: the rounding masks the gradients
        assert "masking:gradients" in {f["id"] for f in data["findings"]}
        retry = [s for s in data["steps"] if s["check"] == "adaptive-retry"]
        assert retry and all(s["status"] == "done" and s["params"]["method"] for s in retry), ids
    elif fmt == "script-noise":  # the second crash: a noisy TorchScript model, retried through EOT
        assert "masking:randomness" in {f["id"] for f in data["findings"]}
        retry = [s for s in data["steps"] if s["check"] == "adaptive-retry"]
        assert retry and all(s["status"] == "done" for s in retry), ids
        white_box = [s for s in retry if "base_attack" in s["params"]]  # (gradient-free ones may join them)
        assert white_box and all("EOT" in s["params"]["method"] for s in white_box), ids
    else:
        assert any(i.startswith("evasion/") for i in ids), ids
