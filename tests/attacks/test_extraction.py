"""Model extraction over a prediction API: equation solving, Knockoff/Copycat surrogates, transfer attacks."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sparring.attacks.evasion.pgd import PGD
from sparring.attacks.extraction import (
    EquationSolving,
    ExtractionResult,
    KnockoffNets,
    accuracy,
    agreement,
    fidelity,
    transfer_attack,
)
from sparring.data import Dataset
from sparring.data.datasets import load_breast_cancer, load_digits
from sparring.errors import AccessError, InputSpecError, ParameterError
from sparring.serving import make_server
from sparring.targets.http import HttpTarget
from sparring.targets.sklearn import SklearnTarget
from sparring.targets.spec import Access, InputSpec
from sparring.targets.torch import TorchTarget


def _logreg(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter of lbfgs on unscaled data
        return LogisticRegression(max_iter=5000).fit(x, y)


@pytest.fixture(scope="module")
def standardised_bc() -> tuple[Any, InputSpec, torch.Tensor]:
    """A plain logistic regression on standardised breast-cancer features (the API takes standardised features)."""
    ds = load_breast_cancer()
    mu, sd = ds.x_train.double().mean(0), ds.x_train.double().std(0)
    xs = ((torch.cat([ds.x_train, ds.x_test]).double() - mu) / sd)
    spec = InputSpec(shape=(30,), n_classes=2, layout="features",
                     bounds=(xs.min(0).values.tolist(), xs.max(0).values.tolist()))
    model = _logreg(((ds.x_train.double() - mu) / sd).numpy(), ds.y_train.numpy())
    return model, spec, ((ds.x_test.double() - mu) / sd).float()


def _true_params(model: Any) -> np.ndarray:
    return np.asarray(np.r_[model.coef_[0], model.intercept_[0]], dtype=np.float64)


def test_equation_solving_recovers_logistic_regression_over_http(
    standardised_bc: tuple[Any, InputSpec, torch.Tensor],
) -> None:
    model, spec, x_test = standardised_bc
    with make_server(SklearnTarget(model, spec)) as srv, HttpTarget(srv.url + "/predict", spec) as api:
        stolen = EquationSolving()(api)
    # 31 equations; answers reading within float32 eps of 0 or 1 were replaced by queries nearer the boundary
    assert stolen.used == 31 and stolen.queries == 31 + stolen.saturated == api.counter.used
    got = np.r_[stolen.weights[1].numpy(), stolen.bias[1].item()]
    assert np.abs(got - _true_params(model)).max() < 1e-5
    assert fidelity(stolen.as_target(api), model.predict(x_test.numpy()), x_test) == 1.0


def test_rounding_outputs_to_two_decimals_degrades_recovery(
    standardised_bc: tuple[Any, InputSpec, torch.Tensor],
) -> None:
    model, spec, x_test = standardised_bc
    true = _true_params(model)
    with make_server(SklearnTarget(model, spec, decimals=2)) as srv, HttpTarget(srv.url + "/predict", spec) as api:
        # points spread over the whole range: nearly every answer reads 0 or 1 and is refused, not fitted
        with pytest.raises(ParameterError, match=r"needs d \+ 1 = 31 unsaturated answers.*center="):
            EquationSolving()(api)
        # a careful attacker queries around a typical input (the data mean, 0 here) where answers are not saturated
        careful = EquationSolving(spread=0.3, center=torch.zeros(30))(api)
    err_careful = np.abs(np.r_[careful.weights[1].numpy(), careful.bias[1].item()] - true).max()
    assert careful.saturated == 0 and 1e-2 < err_careful < 1.0  # from < 1e-5 without rounding
    assert fidelity(careful.as_target(api), model.predict(x_test.numpy()), x_test) == 1.0
    with pytest.raises(ParameterError, match="spread must be"):
        EquationSolving(spread=0.0)(api)


def _steep_logreg() -> tuple[Any, InputSpec]:
    """The issue's case: logistic regression with w = 30 (every feature), b = -60 on [0, 1]^5 (float64 1 - p)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.r_[np.zeros((1, 5)), np.ones((1, 5))], [0, 1])
    model.coef_, model.intercept_ = np.full((1, 5), 30.0), np.array([-60.0])
    return model, InputSpec(shape=(5,), n_classes=2, layout="features", bounds=(0.0, 1.0))


def test_equation_solving_drops_saturated_answers_and_moves_queries_to_the_boundary() -> None:
    model, spec = _steep_logreg()
    for n, worst in ((None, 1e-4), (500, 1e-6)):  # clamping saturated answers into the fit: 130 and 8.1
        stolen = EquationSolving(n_queries=n)(SklearnTarget(model, spec))
        err = np.abs(np.r_[stolen.weights[1].numpy() - 30, stolen.bias[1].item() + 60]).max()
        assert err < worst, (n, err)
        assert stolen.saturated > 0 and stolen.queries == stolen.used + stolen.saturated
        assert stolen.used == (6 if n is None else 500) and stolen.summary()["saturated"] == stolen.saturated
    # no replacements: the same 500 queries, the saturated ones dropped (278 within float32 eps of 0 or 1)
    plain = EquationSolving(n_queries=500, max_queries=500)(SklearnTarget(model, spec))
    assert plain.queries == 500 and plain.used + plain.saturated == 500 and plain.saturated > 200
    assert np.abs(plain.weights[1].numpy() - 30).max() < 1e-6
    with pytest.raises(ParameterError, match="needs d \\+ 1 = 6 unsaturated answers in general position; after 6"):
        EquationSolving(max_queries=6)(SklearnTarget(model, spec))
    with pytest.raises(ParameterError, match="max_queries must be an integer >= n_queries = 6; got 5"):
        EquationSolving(max_queries=5)(SklearnTarget(model, spec))
    with pytest.raises(ParameterError, match=r"floor must be a probability in \[0, 0.5\); got 0.5"):
        EquationSolving(floor=0.5)(SklearnTarget(model, spec))


def test_equation_solving_recovers_softmax_regression_with_d_plus_1_queries() -> None:
    ds = load_digits(8)
    flat = ds.x_train.reshape(len(ds.x_train), -1).numpy()
    model = _logreg(flat, ds.y_train.numpy())
    target = SklearnTarget(model, ds.spec)
    stolen = EquationSolving()(target)
    assert stolen.used == 65 and stolen.queries == 65 + stolen.saturated
    want = model.coef_ - model.coef_[:1]
    assert np.abs(stolen.weights.numpy() - want).max() < 1e-4
    assert np.abs(stolen.bias.numpy() - (model.intercept_ - model.intercept_[0])).max() < 1e-4
    assert fidelity(stolen.as_target(target), target, ds.x_test) == 1.0


def test_equation_solving_rejects_too_few_queries_and_labels_only_targets(
    standardised_bc: tuple[Any, InputSpec, torch.Tensor],
) -> None:
    model, spec, _ = standardised_bc
    with pytest.raises(ParameterError, match="d \\+ 1 = 31"):
        EquationSolving(n_queries=30)(SklearnTarget(model, spec))
    with pytest.raises(AccessError, match="equation solving needs scores"):
        EquationSolving()(SklearnTarget(model, spec, access=Access.LABELS))


# ---------------------------------------------------------------------------------------------- surrogates
@pytest.fixture(scope="module")
def victim(digits_cnn: TorchTarget) -> TorchTarget:
    return TorchTarget(digits_cnn.model, digits_cnn.spec)  # its own counter


@pytest.fixture(scope="module")
def stolen(victim: TorchTarget, digits: Dataset) -> Iterator[ExtractionResult]:
    """A Copycat surrogate (hard labels) stolen through a labels-only HTTP API with a 300-query budget."""
    served = TorchTarget(victim.model, victim.spec, access=Access.LABELS)
    with make_server(served) as srv, HttpTarget(srv.url + "/predict", victim.spec, output="labels",
                                                query_budget=300) as api:
        yield KnockoffNets(budget=300, labels="hard", rounds=2, epochs=8)(
            api, digits.x_train, eval_x=digits.x_test, eval_labels=victim.predict(digits.x_test),
            eval_y=digits.y_test)


def test_knockoff_surrogate_agrees_with_victim_over_http(stolen: ExtractionResult) -> None:
    assert stolen.queries == 300
    assert [h["queries"] for h in stolen.history] == [150.0, 300.0]
    assert stolen.fidelity is not None and stolen.fidelity >= 0.9
    assert stolen.accuracy is not None and stolen.accuracy >= 0.85
    assert stolen.summary()["label_mode"] == "hard"


def test_soft_labels_with_active_sampling_reach_high_fidelity(victim: TorchTarget, digits: Dataset) -> None:
    res = KnockoffNets(budget=200, strategy="active", rounds=2, epochs=8)(victim, digits.x_train)
    assert res.queries == 200
    assert fidelity(res.surrogate, victim.predict(digits.x_test), digits.x_test) >= 0.85
    assert accuracy(res.surrogate, digits.x_test, digits.y_test) >= 0.85


def test_transfer_from_surrogate_beats_same_norm_noise(
    stolen: ExtractionResult, victim: TorchTarget, digits: Dataset
) -> None:
    x, y = digits.x_test[:100], digits.y_test[:100]
    res = transfer_attack(stolen.surrogate, victim, x, y, attack=PGD(eps=0.2, steps=20))
    assert res.n_correct >= 95
    assert res.noise_rate <= 0.02  # random signs of the same L∞ size almost never flip the victim
    assert res.transfer_rate >= max(0.2, 10 * res.noise_rate)
    assert res.cost.queries == 300  # clean, adversarial, noise: labels only


def test_knockoff_errors_name_the_fix(victim: TorchTarget, digits: Dataset) -> None:
    with pytest.raises(ParameterError, match="strategy must be one of"):
        KnockoffNets(strategy="bandit")(victim, digits.x_train)  # type: ignore[arg-type]
    with pytest.raises(InputSpecError, match="pass pool="):
        KnockoffNets(strategy="natural")(victim)
    with pytest.raises(AccessError, match="knockoff \\(soft labels\\)"):
        KnockoffNets(labels="soft")(TorchTarget(victim.model, victim.spec, access=Access.LABELS), digits.x_train)
    with pytest.raises(ParameterError, match="budget must be a positive integer"):
        KnockoffNets(budget=0)(victim, digits.x_train)
    with pytest.raises(ParameterError, match="active sampling needs a pool"):
        KnockoffNets(budget=500, strategy="active")(victim, digits.x_train[:100])
    with pytest.raises(InputSpecError, match="same length"):
        agreement(torch.zeros(3), torch.zeros(4))


# ---------------------------------------------------------------------------------------------- CLI and audit
def test_steal_command_reports_queries_and_fidelity() -> None:
    from click.testing import CliRunner

    from sparring.cli import EXIT_INPUT, build_cli

    r = CliRunner().invoke(build_cli(), ["steal", "equation", "--model", "breast-cancer-logreg", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["used"] == 31 and out["queries"] == 31 + out["saturated"] and out["fidelity"] == 1.0
    r = CliRunner().invoke(build_cli(), ["steal", "knockoff", "--url", "http://127.0.0.1:9/predict", "--model",
                                         "model.onnx"])
    assert r.exit_code == EXIT_INPUT and "--spec spec.json" in r.output


def test_audit_check_reports_fidelity_against_queries(tmp_path: Path) -> None:
    from sparring.audit import load_system, parse_threat_model, plan_audit, run_audit
    from sparring.audit.report import write_reports
    from tests.audit.conftest import SMALL

    base = {**SMALL, "certification": {}, "gates": [],
            "system": {"model": "digits-cnn", "data": {"source": "zoo", "split": "test", "n": 80}},
            "attacker": {"knowledge": "black-box", "evasion": [], "query_budget": 120}}
    off = parse_threat_model(base)
    plan = plan_audit(off, load_system(off)[0])
    assert any(s.check == "extraction-surrogate" and "model_ip" in s.reason for s in plan.skipped)
    tm = parse_threat_model({**base, "assets": {"model_ip": True}})
    audit = run_audit(tm, tmp_path / "out")
    res = [r for r in audit.results if r.check == "extraction-surrogate"]
    assert len(res) == 1 and res[0].cost["queries"] == 120
    curve = [(m.params["queries"], m.value) for m in res[0].measurements if m.metric == "extraction_fidelity"]
    assert [q for q, _ in curve] == [30, 60, 90, 120] and curve[-1][1] >= 0.5
    assert any(f.threat == "extraction" for f in audit.findings)
    html = write_reports(audit, tmp_path / "out", ("html",))["html"].read_text(encoding="utf-8")
    assert "Model extraction (model IP)" in html
