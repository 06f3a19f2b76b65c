"""White-box ONNX: a model trained and exported in the test is attacked through its torch conversion with the numbers
the torch model gives, the conversion is checked against onnxruntime, and what it cannot convert is named."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from sparring import FGSM, PGD
from sparring.cli import EXIT_MODEL, build_cli
from sparring.data import Dataset
from sparring.errors import AccessError, OnnxConversionError
from sparring.targets import OnnxTarget, TorchTarget
from sparring.targets.load import load_target
from sparring.targets.onnx_torch import OnnxTorchTarget, onnx_to_torch
from sparring.targets.spec import InputSpec

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = InputSpec(shape=(1, 28, 28), n_classes=10, bounds=(0.0, 1.0))


class SmallCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool, a strided conv, ``x.view(x.size(0), -1)`` (Shape/Gather/Concat/Reshape in ONNX)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn = nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 8, 3, stride=2)
        self.fc = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.bn(self.c1(x))), 2)
        x = torch.relu(self.c2(x))
        return self.fc(x.view(x.size(0), -1))  # type: ignore[no-any-return]


def bounds_net() -> nn.Module:
    """Layers bound propagation supports: strided conv, ReLU, average pooling, Flatten, Linear."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 10))


def train(model: nn.Module, ds: Dataset, steps: int = 60) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(ds.x_train), (64,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx]).backward()
        opt.step()
    return model.eval()


def export(model: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():  # the TorchScript-based exporter warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(2, 1, 28, 28),), str(path), dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def cnn(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = train(SmallCNN(), digits)
    return model, export(model, tmp_path_factory.mktemp("onnx") / "cnn.onnx")


@pytest.fixture(scope="module")
def bounded(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = train(bounds_net(), digits)
    return model, export(model, tmp_path_factory.mktemp("onnx") / "bounds.onnx")


@pytest.fixture(scope="module")
def data(digits: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return digits.x_test[:64], digits.y_test[:64]


def unsupported_model(path: Path) -> Path:
    """A 4-feature, 3-class model whose graph uses Einsum and Hardmax (onnxruntime runs both; the conversion not)."""
    w = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Einsum", ["x", "w"], ["z"], equation="bi,ij->bj", name="mix"),
         helper.make_node("Hardmax", ["z"], ["h"], name="pick"), helper.make_node("Add", ["z", "h"], ["scores"])],
        "unsupported", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


FEATURES4 = InputSpec(shape=(4,), n_classes=3, bounds=(-3.0, 3.0), layout="features")


# ---------------------------------------------------------------------------------------------- conversion
def test_converted_cnn_matches_torch_and_onnxruntime(cnn: tuple[nn.Module, Path],
                                                     data: tuple[torch.Tensor, torch.Tensor]) -> None:
    model, path = cnn
    x, _ = data
    module = onnx_to_torch(path)
    with torch.no_grad():
        torch.testing.assert_close(module(x), model(x), atol=1e-5, rtol=1e-5)
    target = load_target(path, spec=SPEC, white_box=True)
    assert isinstance(target, OnnxTorchTarget) and isinstance(target.reference, OnnxTarget)
    assert target.checked_points == 64  # the probe inputs drawn in the bounds at construction
    diff = target.check_agreement(x)
    assert 0 <= diff < 1e-4 and target.checked_points == 128
    d = target.describe()["onnx"]
    assert d["max_abs_diff"] == target.max_abs_diff < 1e-4 and d["reference"] == "onnxruntime"
    assert isinstance(load_target(path, spec=SPEC), OnnxTarget)  # the default stays onnxruntime, scores only


def test_gradients_flow_to_the_input_through_the_conversion(cnn: tuple[nn.Module, Path],
                                                            data: tuple[torch.Tensor, torch.Tensor]) -> None:
    model, path = cnn
    x, y = data
    ours = OnnxTorchTarget(path, SPEC).loss_gradient(x[:16], y[:16])
    theirs = TorchTarget(model, SPEC).loss_gradient(x[:16], y[:16])
    # the exporter folds BatchNorm into the convolution, so values differ by rounding and max-pool near-ties may
    # route a gradient to the other pixel; everywhere else the gradients are the same
    close = torch.isclose(ours, theirs, atol=1e-5, rtol=1e-4)
    assert float(close.float().mean()) > 0.995
    assert float(nn.functional.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0)) > 0.999


def test_pgd_on_the_onnx_file_gives_the_torch_models_robust_accuracy(
        cnn: tuple[nn.Module, Path], data: tuple[torch.Tensor, torch.Tensor]) -> None:
    model, path = cnn
    x, y = data
    attack = PGD(eps=0.05, steps=10, seed=0)
    on_torch = attack(TorchTarget(model, SPEC), x, y)
    target = load_target(path, spec=SPEC, white_box=True)
    on_onnx = attack(target, x, y)
    assert on_torch.clean_accuracy == on_onnx.clean_accuracy > 0.5
    assert 0 < on_torch.robust_accuracy < on_torch.clean_accuracy  # the attack does something
    assert int((on_torch.success != on_onnx.success).sum()) <= 1  # the same points, within one
    assert isinstance(target, OnnxTorchTarget)
    assert target.check_adversarial(on_onnx.x_adv, on_onnx.adv_pred) >= 63 / 64  # onnxruntime sees the same labels


def test_bpda_through_a_defence_in_front_of_the_converted_model(
        cnn: tuple[nn.Module, Path], data: tuple[torch.Tensor, torch.Tensor]) -> None:
    from sparring.defenses.preprocess import BitDepth, bpda, defend

    model, path = cnn
    x, y = data
    attack = PGD(eps=0.1, steps=10, seed=0)
    converted = OnnxTorchTarget(path, SPEC)
    onnx_def = defend(converted, BitDepth(2))  # the converted target itself (it used to be refused as "wrapped")
    naive, honest = attack(onnx_def, x, y), attack(bpda(onnx_def), x, y)
    assert honest.robust_accuracy < naive.robust_accuracy  # quantisation shatters the gradient; BPDA gets through
    torch_honest = attack(bpda(defend(TorchTarget(model, SPEC), BitDepth(2))), x, y)
    assert abs(honest.robust_accuracy - torch_honest.robust_accuracy) <= 1 / 64


class RoundNet(nn.Module):
    """Quantises its input to 4 grey levels inside the graph (ONNX Round): zero gradients, a masking defence."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 3.0) / 3.0)  # type: ignore[no-any-return]


def test_bpda_finds_the_rounding_inside_the_onnx_graph(digits: Dataset, tmp_path: Path,
                                                       data: tuple[torch.Tensor, torch.Tensor]) -> None:
    from sparring.attacks import adaptive

    torch.manual_seed(0)
    target = OnnxTorchTarget(export(train(RoundNet(), digits, steps=80), tmp_path / "round.onnx"), SPEC)
    x, y = data
    attack = PGD(eps=0.1, steps=10, seed=0)
    naive = attack(target, x, y)
    wrapped, notes = adaptive(target, x)
    assert any("steps.Round" in n for n in notes)  # named after the ONNX node
    honest = attack(wrapped, x, y)
    assert honest.robust_accuracy < naive.robust_accuracy - 0.3  # measured: 0.91 naive, 0.41 with BPDA


def test_bound_propagation_verifies_the_converted_model_like_the_torch_model(
        bounded: tuple[nn.Module, Path], data: tuple[torch.Tensor, torch.Tensor]) -> None:
    from sparring.defenses.certify import verify

    model, path = bounded
    target = OnnxTorchTarget(path, SPEC)
    x, y = data[0][:32], data[1][:32]
    ours, theirs = verify(target, x, y, eps=0.01), verify(TorchTarget(model, SPEC), x, y, eps=0.01)
    assert ours.verified_accuracy == theirs.verified_accuracy > 0
    torch.testing.assert_close(torch.as_tensor(ours.margin_lower), torch.as_tensor(theirs.margin_lower),
                               atol=1e-3, rtol=1e-3)


def test_a_graph_exported_with_a_fixed_batch_size_is_fed_that_many(
        cnn: tuple[nn.Module, Path], data: tuple[torch.Tensor, torch.Tensor], tmp_path: Path) -> None:
    model, _ = cnn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(3, 1, 28, 28),), str(tmp_path / "fixed.onnx"), dynamo=False,
                          input_names=["x"])  # no dynamic axes: view(x.size(0), -1) becomes Reshape to [3, 288]
    target = OnnxTorchTarget(tmp_path / "fixed.onnx", SPEC)
    assert target.fixed_batch == 3
    x, y = data[0][:10], data[1][:10]  # 10 = 3 + 3 + 3 + 1: the last chunk padded
    target.check_agreement(x)
    ours, theirs = PGD(eps=0.05, steps=5, seed=0)(target, x, y), PGD(eps=0.05, steps=5, seed=0)(
        TorchTarget(model, SPEC), x, y)
    assert int((ours.success != theirs.success).sum()) <= 1


def test_a_double_precision_graph_stays_in_double(tmp_path: Path) -> None:
    from onnx import TensorProto as T

    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(4, 3)), rng.normal(size=(3,))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["scores"])], "lin",
        [helper.make_tensor_value_info("x", T.DOUBLE, ["batch", 4])],
        [helper.make_tensor_value_info("scores", T.DOUBLE, ["batch", 3])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "lin64.onnx"))
    target = OnnxTorchTarget(tmp_path / "lin64.onnx", FEATURES4)
    assert target.dtype == torch.float64
    x = torch.from_numpy(rng.uniform(-3, 3, size=(16, 4)))
    torch.testing.assert_close(target.model(x), x @ torch.from_numpy(w) + torch.from_numpy(b), atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------- refusals
def test_unsupported_operators_are_all_named(tmp_path: Path) -> None:
    path = unsupported_model(tmp_path / "u.onnx")
    with pytest.raises(OnnxConversionError, match=r"Einsum \(node 'mix'\).*Hardmax \(node 'pick'\)") as info:
        load_target(path, spec=FEATURES4, white_box=True)
    assert info.value.ops == ("Einsum", "Hardmax")
    assert isinstance(load_target(path, spec=FEATURES4), OnnxTarget)  # still scoreable on onnxruntime


def test_a_conversion_that_drifts_from_onnxruntime_is_refused_with_the_difference(
        cnn: tuple[nn.Module, Path], data: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, path = cnn
    target = OnnxTorchTarget(path, SPEC)
    fc = next(m for m in target.model.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        fc.bias.add_(0.05)  # what a wrong conversion would look like: outputs shifted against onnxruntime
    with pytest.raises(OnnxConversionError, match=r"differs from onnxruntime by up to 0\.05") as info:
        target.check_agreement(data[0])
    assert info.value.max_abs_diff == pytest.approx(0.05, abs=1e-3)


def test_onnxruntime_target_still_refuses_gradients(cnn: tuple[nn.Module, Path],
                                                    data: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(AccessError):
        PGD(eps=0.1)(OnnxTarget(cnn[1], SPEC), *data)


# ---------------------------------------------------------------------------------------------- CLI
def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(build_cli(), list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def _files(tmp_path: Path, x: torch.Tensor, y: torch.Tensor, spec: InputSpec) -> tuple[str, str]:
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    return str(tmp_path / "spec.json"), str(tmp_path / "d.npz")


def test_cli_attack_fgsm_on_an_onnx_file(cnn: tuple[nn.Module, Path], data: tuple[torch.Tensor, torch.Tensor],
                                         tmp_path: Path) -> None:
    model, path = cnn
    x, y = data
    spec, npz = _files(tmp_path, x, y, SPEC)
    code, out, err = _run("attack", "fgsm", "--model", str(path), "--spec", spec, "--data", npz, "--eps", "0.1",
                          "--json")
    assert code == 0, err
    d = json.loads(out)
    expected = FGSM(eps=0.1)(TorchTarget(model, SPEC), x, y)
    assert d["n"] == 64 and d["clean_accuracy"] == expected.clean_accuracy
    assert abs(d["robust_accuracy"] - expected.robust_accuracy) <= 1 / 64
    assert d["onnx"]["max_abs_diff"] < 1e-4 and d["onnx"]["checked_points"] == 64 + 64 + 64
    assert d["onnx"]["adv_label_agreement"] >= 63 / 64


def test_cli_attack_names_the_operators_it_cannot_convert(tmp_path: Path) -> None:
    path = unsupported_model(tmp_path / "u.onnx")
    x = torch.zeros(4, 4)
    spec, npz = _files(tmp_path, x, torch.zeros(4, dtype=torch.long), FEATURES4)
    code, _, err = _run("attack", "pgd", "--model", str(path), "--spec", spec, "--data", npz, "--json")
    assert code == EXIT_MODEL
    assert "OnnxConversionError" in err and "Einsum" in err and "Hardmax" in err


def test_cli_attack_takes_a_url(cnn: tuple[nn.Module, Path], data: tuple[torch.Tensor, torch.Tensor],
                                tmp_path: Path) -> None:
    from sparring.serving import make_server

    model, _ = cnn
    x, y = data[0][:8], data[1][:8]
    spec, npz = _files(tmp_path, x, y, SPEC)
    with make_server(TorchTarget(model, SPEC)) as srv:
        url = srv.url + "/predict"
        code, out, err = _run("attack", "square", "--url", url, "--spec", spec, "--data", npz, "--eps", "0.2",
                              "--n-queries", "30", "--scores", "logits", "--json", "--no-progress")
        assert code == 0, err
        d = json.loads(out)
        assert d["url"] == url and d["n"] == 8 and d["robust_accuracy"] <= d["clean_accuracy"]
        code, _, err = _run("attack", "pgd", "--url", url, "--spec", spec, "--data", npz)
    assert code == EXIT_MODEL and "AccessError" in err  # an API gives no gradients
    code, _, err = _run("attack", "square", "--url", url, "--model", "mine.onnx", "--data", npz)
    assert code == 3 and "--spec" in err


def test_cli_certify_bounds_on_an_onnx_file(bounded: tuple[nn.Module, Path],
                                            data: tuple[torch.Tensor, torch.Tensor], tmp_path: Path) -> None:
    from sparring.defenses.certify import verify

    model, path = bounded
    x, y = data[0][:32], data[1][:32]
    spec, npz = _files(tmp_path, x, y, SPEC)
    code, out, err = _run("certify", "bounds", "--model", str(path), "--spec", spec, "--data", npz, "--eps", "0.01",
                          "--json", "--no-progress")
    assert code == 0, err
    d = json.loads(out)
    assert d["certified_accuracy"]["0.01"] == verify(TorchTarget(model, SPEC), x, y, eps=0.01).verified_accuracy
    assert d["onnx"]["max_abs_diff"] < 1e-4 and d["onnx"]["checked_points"] == 64 + 32


class _KeyedApi:
    """A prediction API of its own: {"instances": ...} in, {"logits": ...} out, 401 without the bearer token."""

    def __init__(self, model: nn.Module, token: str) -> None:
        import http.server
        import threading

        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                api.seen += 1
                with torch.no_grad():
                    out = model(torch.tensor(body["instances"], dtype=torch.float32)).tolist()
                data = json.dumps({"logits": out}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.seen = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/predict"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _KeyedApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_cli_attack_url_with_headers_keys_and_logits(cnn: tuple[nn.Module, Path],
                                                     data: tuple[torch.Tensor, torch.Tensor], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = cnn
    x, y = data[0][:8], data[1][:8]
    spec, npz = _files(tmp_path, x, y, SPEC)
    monkeypatch.setenv("API_TOKEN", "s3cret")
    with _KeyedApi(model, "s3cret") as api:
        base = ["attack", "square", "--url", api.url, "--spec", spec, "--data", npz, "--eps", "0.2", "--n-queries",
                "20", "--input-key", "instances", "--output-key", "logits", "--scores", "logits", "--json"]
        code, out, err = _run(*base, "--http-header", "Authorization: Bearer ${API_TOKEN}", "--timeout", "5")
        assert code == 0, err
        assert "s3cret" not in out  # the secret stays out of the output
        d = json.loads(out)
        expected = TorchTarget(model, SPEC).accuracy(x, y)
        assert d["clean_accuracy"] == expected and api.seen > 0
        code, _, err = _run(*base)  # no token: the API refuses, exit 4 naming the status
    assert code == EXIT_MODEL and "401" in err
    code, _, err = _run("attack", "fgsm", "--model", str(cnn[1]), "--spec", spec, "--data", npz, "--timeout", "3")
    assert code == 3 and "--timeout applies to --url only" in err


def test_audit_from_yaml_attacks_an_onnx_file_white_box_like_the_torch_model(
        cnn: tuple[nn.Module, Path], data: tuple[torch.Tensor, torch.Tensor], tmp_path: Path) -> None:
    """Issue 17: an ONNX CNN from YAML gets gradient attacks (the converted graph, checked against onnxruntime on
    the audit data), not only Square, and the same robust accuracy as the torch model it was exported from."""
    from sparring.audit import parse_threat_model, run_audit

    model, path = cnn
    x, y = data[0][:32], data[1][:32]
    spec, npz = _files(tmp_path, x, y, SPEC)
    doc = {"schema_version": 1, "name": "onnx-cnn", "effort": "quick", "seed": 0,
           "system": {"model": str(path), "spec": spec, "data": {"source": npz, "n": 32}},
           "attacker": {"knowledge": "white-box", "evasion": [{"norm": "linf", "eps": [0.05]}]},
           "gates": [{"metric": "robust_accuracy", "norm": "linf", "eps": 0.05, "min": 0.0}]}
    audit = run_audit(parse_threat_model(doc), tmp_path / "onnx")
    assert not audit.errors, [r.error for r in audit.errors]
    assert any(r.check == "evasion-gradient" for r in audit.results)  # white-box: PGD/APGD ran on the graph
    ref = run_audit(parse_threat_model(doc), tmp_path / "torch", target=TorchTarget(model, SPEC), data=(x, y))
    (g_onnx,), (g_torch,) = audit.gates, ref.gates
    assert g_onnx.value is not None and g_torch.value is not None
    assert abs(g_onnx.value - g_torch.value) <= 1 / 32


def test_cli_steal_takes_the_same_http_settings_as_attack(cnn: tuple[nn.Module, Path], digits: Dataset,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17: `sparring steal --url` had no way to send a token or name the API's keys."""
    model, _ = cnn
    spec, pool = _files(tmp_path, digits.x_train[:64], digits.y_train[:64], SPEC)
    np.savez(tmp_path / "eval.npz", x=digits.x_test[:32].numpy(), y=digits.y_test[:32].numpy())
    monkeypatch.setenv("API_TOKEN", "s3cret")
    with _KeyedApi(model, "s3cret") as api:
        base = ["steal", "knockoff", "--url", api.url, "--spec", spec, "--pool", pool, "--eval-data",
                str(tmp_path / "eval.npz"), "--n-eval", "32", "--budget", "64", "--rounds", "1", "--epochs", "1",
                "--input-key", "instances", "--output-key", "logits", "--scores", "logits", "--json"]
        code, out, err = _run(*base, "--http-header", "Authorization: Bearer ${API_TOKEN}")
        assert code == 0, err
        assert "s3cret" not in out and api.seen > 0 and json.loads(out)["queries"] == 64
        code, _, err = _run(*base)  # no token: the API refuses, exit 4 naming the status
    assert code == EXIT_MODEL and "401" in err
    code, _, err = _run("steal", "knockoff", "--model", "digits-cnn", "--timeout", "3")
    assert code == 3 and "--timeout applies to --url only" in err


def test_sparring_audit_yaml_runs_bpda_and_bound_propagation_on_onnx_files(
        digits: Dataset, bounded: tuple[nn.Module, Path], data: tuple[torch.Tensor, torch.Tensor],
        tmp_path: Path) -> None:
    """Issue 17 from YAML through ``sparring audit``: on an ONNX graph that rounds its input the masking checks fire
    and the retry rewrites the graph's Round node (BPDA) to give an honest number; on an ONNX CNN with a
    ``certification.bounds`` section, bound propagation on the converted graph certifies what it certifies on the
    torch model the file was exported from."""
    import yaml

    from sparring.defenses.certify import verify

    torch.manual_seed(0)
    round_path = export(train(RoundNet(), digits, steps=80), tmp_path / "round.onnx")
    x, y = data[0][:48], data[1][:48]
    spec, npz = _files(tmp_path, x, y, SPEC)
    base = {"schema_version": 1, "effort": "quick", "seed": 0, "attacker": {"knowledge": "white-box",
            "evasion": [{"norm": "linf", "eps": [0.1]}]}}
    docs = {
        "round": {**base, "name": "onnx-round", "system": {"model": str(round_path), "spec": spec,
                                                          "data": {"source": npz, "n": 48}}},
        "bounds": {**base, "name": "onnx-bounds",
                   "system": {"model": str(bounded[1]), "spec": spec, "data": {"source": npz, "n": 32}},
                   "certification": {"bounds": {"eps": [0.01]}},
                   "gates": [{"metric": "certified_accuracy", "norm": "linf", "eps": 0.01, "min": 0.0}]},
    }
    reports = {}
    for name, doc in docs.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        code, _, err = _run("audit", str(tmp_path / f"{name}.yaml"), "--out", str(tmp_path / name))
        assert code in (0, 6), err
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    steps = {r["id"]: r for r in reports["round"]["steps"]}
    retry = steps["adaptive/pgd/linf/0.1"]
    assert retry["status"] == "done" and any("Round" in n for n in retry["notes"]), retry["notes"]
    robust = {k: next(m["value"] for m in steps[k]["measurements"] if m["metric"] == "robust_accuracy")
              for k in ("evasion/pgd/linf/0.1", "adaptive/pgd/linf/0.1")}
    assert robust["adaptive/pgd/linf/0.1"] < robust["evasion/pgd/linf/0.1"] - 0.3
    assert any(f["id"] == "masking:retry" for f in reports["round"]["findings"])
    (gate,) = reports["bounds"]["gates"]
    torch_model = verify(TorchTarget(bounded[0], SPEC), x[:32], y[:32], eps=0.01)
    assert gate["value"] == torch_model.verified_accuracy > 0
