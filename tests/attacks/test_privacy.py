"""Membership inference (loss threshold, shadow models, LiRA) and MI-Face inversion on real digits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from sparring.attacks.privacy import (
    LiRA,
    LossThreshold,
    MembershipResult,
    ShadowModelAttack,
    Trainer,
    membership_advantage,
    plot_roc,
    roc_curve,
    torch_trainer,
)
from sparring.attacks.privacy.inversion import MIFace, plot_inversions
from sparring.attacks.privacy.lira import lira_scores
from sparring.attacks.privacy.membership import balanced_halves, random_halves
from sparring.attacks.result import Cost
from sparring.data.datasets import load_digits
from sparring.errors import AccessError, LabelError, ParameterError
from sparring.targets import Access, SklearnTarget, TorchTarget

Universe = tuple[torch.Tensor, torch.Tensor, torch.Tensor, TorchTarget, Trainer]


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, many small steps: see conftest


@pytest.fixture(scope="module")
def overfit() -> Universe:
    """1,000 real 8×8 digits; a deliberately overfit MLP (100% train accuracy) trained on a random half."""
    ds = load_digits(8)
    x, y = torch.cat([ds.x_train, ds.x_test])[:1000], torch.cat([ds.y_train, ds.y_test])[:1000]
    member = random_halves(1, len(x), torch.Generator().manual_seed(123))[0]
    train = torch_trainer(_mlp, ds.spec, epochs=100, lr=1e-2, batch_size=500)
    target = train(x[member], y[member], 999)
    assert isinstance(target, TorchTarget)
    assert target.accuracy(x[member], y[member]) == 1.0
    return x, y, member, target, train


@pytest.fixture(scope="module")
def lira_online(overfit: Universe) -> MembershipResult:
    x, y, member, target, train = overfit
    return LiRA(n_shadow=8, seed=1)(target, x, y, member, train=train)


def test_lira_beats_loss_threshold_at_low_fpr_on_overfit_model(overfit: Universe,
                                                               lira_online: MembershipResult) -> None:
    x, y, member, target, _ = overfit
    loss = LossThreshold()(target, x, y, member)
    # 500 non-members do not resolve 1% FPR (10 / FPR = 1,000): compare the raw readings, report none
    assert lira_online.tpr_at(0.01) is None and lira_online.lowest_measurable_fpr == 0.02
    assert lira_online.raw_tpr_at(0.01) >= 0.04
    assert lira_online.raw_tpr_at(0.01) > 2 * loss.raw_tpr_at(0.01)
    assert lira_online.auc > loss.auc > 0.5
    assert lira_online.cost.queries == len(x)  # one query per example; shadow models cost the target nothing
    offline, _ = lira_scores(lira_online.extras["phi_target"], lira_online.extras["phi_shadow"],
                             lira_online.extras["inside"], online=False, fixed_variance=True)
    off = MembershipResult("lira-offline", {}, Cost(), scores=offline, member=member)
    assert off.raw_tpr_at(0.01) > loss.raw_tpr_at(0.01)


def test_lira_puts_every_example_in_for_exactly_half_of_the_shadow_models(overfit: Universe) -> None:
    x, y, member, target, _ = overfit
    seen: list[int] = []

    def reuse(xs: torch.Tensor, ys: torch.Tensor, seed: int) -> TorchTarget:  # no training: only the split matters
        seen.append(len(xs))
        return target

    res = LiRA(n_shadow=4, seed=3)(target, x, y, member, train=reuse)
    inside = res.extras["inside"]
    assert inside.shape == (4, len(x)) and bool((inside.sum(0) == 2).all())  # an IN and an OUT fit for every one
    assert all(abs(n - len(x) / 2) < 0.1 * len(x) for n in seen)  # each model still gets about half of the pool
    again = balanced_halves(4, len(x), torch.Generator().manual_seed(3))
    assert torch.equal(again, inside)  # reproducible by seed
    assert not torch.equal(again, balanced_halves(4, len(x), torch.Generator().manual_seed(4)))
    assert bool((balanced_halves(5, 100, torch.Generator().manual_seed(0)).sum(0) == 2).all())


def test_lira_offline_call_and_params(overfit: Universe) -> None:
    x, y, member, target, train = overfit
    res = LiRA(n_shadow=2, online=False)(target, x, y, member, train=train)
    assert res.attack == "lira-offline" and res.params["fixed_variance"] is True
    assert res.auc > 0.55
    assert set(res.summary()) >= {"auc", "advantage", "tpr_at_0.001_fpr", "tpr_at_0.01_fpr"}


def test_loss_threshold_at_mean_training_loss_has_positive_advantage(overfit: Universe) -> None:
    x, y, member, target, _ = overfit
    scores = LossThreshold().score(target, x[member], y[member])
    res = LossThreshold(threshold=float((-scores).mean()))(target, x, y, member)
    assert res.extras["tpr"] - res.extras["fpr"] > 0.02  # Yeom's operating point; the best threshold does better
    assert res.advantage > res.extras["tpr"] - res.extras["fpr"]


def test_shadow_model_attack_beats_chance(overfit: Universe) -> None:
    x, y, member, target, train = overfit
    res = ShadowModelAttack(n_shadow=2, seed=0)(target, x, y, member, train=train)
    assert res.auc > 0.51 and res.advantage > 0.05


def test_roc_curve_auc_and_tpr_on_known_scores() -> None:
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    member = torch.tensor([True, False, True, True, False, False])
    fpr, tpr, thr = roc_curve(scores, member)
    assert fpr.tolist() == pytest.approx([0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    assert tpr.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 1])
    assert thr[0] == float("inf")
    res = MembershipResult("probe", {}, Cost(), scores=scores, member=member)
    assert res.auc == pytest.approx(7 / 9)
    assert res.raw_tpr_at(0.0) == pytest.approx(1 / 3) and res.tpr_at(0.0) is None
    assert membership_advantage(scores.numpy(), member.numpy()) == pytest.approx(2 / 3)


def _gaussian(n_out: int, seed: int = 0) -> MembershipResult:
    """Non-members N(0, 1), members N(1, 1): the true TPR at 0.1% FPR is 1 − Φ(3.090 − 1) = 0.0183."""
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.standard_normal(n_out) + 1.0, rng.standard_normal(n_out)]
    member = np.arange(2 * n_out) < n_out
    return MembershipResult("gauss", {}, Cost(), scores=torch.as_tensor(scores), member=torch.as_tensor(member))


def test_low_fpr_tpr_is_reported_only_with_ten_over_fpr_nonmembers() -> None:
    small = _gaussian(200)
    # no false positive allowed at 200: the reading is the TPR above the largest non-member score, not at 0.1%
    s = small.summary()
    assert small.tpr_at(0.001) is None and s["tpr_at_0.001_fpr"] is None and s["tpr_at_0.001_fpr_ci"] is None
    assert s["tpr_at_0.01_fpr"] is None and s["lowest_measurable_fpr"] == 0.05
    assert s["notes"][0].startswith("TPR at 0.1% FPR is not measurable at 200 non-members (it needs at least 10,000")
    assert "not measurable at 200" in small.describe_tpr_at(0.001)
    big = _gaussian(20_000)
    tpr, ci = big.tpr_at(0.001), big.tpr_interval(0.001)
    assert tpr is not None and ci is not None and ci[0] < 0.0183 < ci[1] and ci[1] - ci[0] < 0.025
    assert big.summary()["tpr_at_0.001_fpr_ci"] == list(ci) and big.summary()["notes"] == []
    assert _gaussian(1000).tpr_at(0.01) is not None and _gaussian(999).tpr_at(0.01) is None


def test_plot_roc_uses_log_axes(lira_online: MembershipResult) -> None:
    fig = plot_roc({"LiRA": lira_online})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_mi_face_reconstructs_class_representatives(overfit: Universe) -> None:
    ds = load_digits(8)
    x, y, member, target, _ = overfit
    res = MIFace(steps=300, lr=0.1)(target)
    assert res.x.shape == (10, 1, 8, 8) and float(res.confidence.min()) > 0.9
    assert float(res.x.min()) >= 0.0 and float(res.x.max()) <= 1.0
    means = torch.stack([x[member][y[member] == c].mean(0) for c in range(10)]).flatten(1)
    rec = res.x.flatten(1)
    centred = [(v - v.mean(1, keepdim=True)) / (v - v.mean(1, keepdim=True)).norm(dim=1, keepdim=True)
               for v in (rec, means)]
    closest = (centred[0] @ centred[1].T).argmax(1)
    assert int((closest == torch.arange(10)).sum()) >= 8  # each looks most like its own class's average digit
    fig = plot_inversions(res, class_names=ds.spec.class_names)
    assert len(fig.axes) == 10


# ---------------------------------------------------------------------------------------------- errors
def test_membership_inputs_are_validated(overfit: Universe) -> None:
    x, y, member, target, train = overfit
    with pytest.raises(LabelError, match="one flag per example"):
        LossThreshold()(target, x, y, member[:-1])
    with pytest.raises(LabelError, match="both members and non-members"):
        LossThreshold()(target, x, y, torch.ones(len(x), dtype=torch.bool))
    with pytest.raises(LabelError, match="booleans"):
        LossThreshold()(target, x, y, torch.full((len(x),), 2))
    with pytest.raises(ParameterError, match="n_shadow must be an integer >= 2"):
        LiRA(n_shadow=1)(target, x, y, member, train=train)
    with pytest.raises(ParameterError, match="threshold"):
        LossThreshold(threshold=-1.0)(target, x, y, member)
    labels_only = TorchTarget(target.model, target.spec, access=Access.LABELS)
    with pytest.raises(AccessError, match="loss-threshold needs"):
        LossThreshold()(labels_only, x, y, member)


def test_mi_face_errors(overfit: Universe) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y, _, target, _ = overfit
    with pytest.raises(ParameterError, match=r"classes must be labels in 0\.\.9"):
        MIFace()(target, classes=[10])
    with pytest.raises(ParameterError, match="lr must be a number > 0"):
        MIFace(lr=0)(target)
    with pytest.raises(ParameterError, match="cost must be 'probability'"):
        MIFace(cost="entropy")(target)
    est: Any = LogisticRegression(max_iter=200).fit(np.asarray(x.flatten(1)), np.asarray(y))
    with pytest.raises(ParameterError, match="white-box TorchTarget"):
        MIFace()(SklearnTarget(est, target.spec))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- CLI and audit
def test_cli_membership_and_invert(tmp_path: Any) -> None:
    import json

    from click.testing import CliRunner

    from sparring.cli import build_cli

    roc = tmp_path / "roc.png"
    r = CliRunner().invoke(build_cli(), ["membership", "loss-threshold", "--model", "breast-cancer-mlp", "--n", "60",
                                         "--roc", str(roc), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["attack"] == "loss-threshold" and out["n"] == 120 and 0.0 <= out["auc"] <= 1.0
    assert out["tpr_at_0.001_fpr"] is None and out["tpr_at_0.01_fpr"] is None and len(out["notes"]) == 2
    r = CliRunner().invoke(build_cli(), ["membership", "loss-threshold", "--model", "breast-cancer-mlp"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())  # rich wraps the sentences
    assert "TPR at 0.1% FPR is not measurable at 142 non-members (it needs at least 10,000" in text
    assert roc.read_bytes()[:4] == b"\x89PNG"
    img = tmp_path / "inv.png"
    r = CliRunner().invoke(build_cli(), ["invert", "--model", "breast-cancer-mlp", "--steps", "50", "--out",
                                         str(img)])
    assert r.exit_code == 0, r.output
    assert "class 1: confidence" in r.output and img.exists()
    r = CliRunner().invoke(build_cli(), ["membership", "lira", "--model", "breast-cancer-mlp", "--members", "a.npz"])
    assert r.exit_code == 3 and "--nonmembers" in r.output


def test_audit_plans_and_reports_membership_for_a_zoo_model(tmp_path: Any) -> None:
    from sparring.audit import parse_threat_model, plan_audit, run_audit
    from sparring.audit.report import write_reports
    from sparring.data import zoo

    base = {"schema_version": 1, "name": "privacy", "effort": "standard",
            "system": {"model": "breast-cancer-mlp", "data": {"n": 60}}, "assets": {"training_data_privacy": True}}
    audit = run_audit(parse_threat_model(base), tmp_path / "out")
    steps = {r.step_id: r for r in audit.results if r.check == "membership"}
    assert set(steps) == {"privacy/membership/loss-threshold", "privacy/membership/lira-offline/4"}
    assert all(0.0 <= (r.value("membership_auc") or -1) <= 1.0 for r in steps.values())
    html = write_reports(audit, tmp_path / "out", ("html",))["html"].read_text(encoding="utf-8")
    assert "Training-data privacy (membership inference)" in html and 'alt="membership ROC"' in html
    tm_off = parse_threat_model({**base, "assets": {"training_data_privacy": False}})
    off = plan_audit(tm_off, zoo.load("breast-cancer-mlp"))
    assert any(s.check == "membership" and "false" in s.reason for s in off.skipped)


@pytest.mark.slow
def test_lira_with_64_shadows_finds_members_at_0_1_percent_fpr(overfit: Universe) -> None:
    """The paper-like setting (benchmarks/bench_privacy.py --shadows 64): minutes on a CPU."""
    x, y, member, target, train = overfit
    lira = LiRA(n_shadow=64)(target, x, y, member, train=train)
    loss = LossThreshold()(target, x, y, member)
    assert lira.params["fixed_variance"] is False
    assert lira.raw_tpr_at(0.001) > 0.02 > loss.raw_tpr_at(0.001)


def test_cli_membership_on_a_prediction_api_matches_the_model_file(tmp_path: Any) -> None:
    """Issue 17: ``sparring membership --url`` with the HTTP settings of every --url command; members and
    non-members from .npz files under their own array names (--x-key/--y-key). The same scores over HTTP give the
    same AUC as the model file; an HTTP option without --url is refused (exit 3)."""
    import json

    from click.testing import CliRunner

    from sparring import zoo
    from sparring.cli import build_cli
    from sparring.serving import make_server

    ds = zoo.data("breast-cancer-mlp")
    np.savez(tmp_path / "in.npz", rows=ds.x_train[:60].numpy(), target=ds.y_train[:60].numpy())
    np.savez(tmp_path / "out.npz", rows=ds.x_test[:60].numpy(), target=ds.y_test[:60].numpy())
    files = ["--members", str(tmp_path / "in.npz"), "--nonmembers", str(tmp_path / "out.npz"), "--x-key", "rows",
             "--y-key", "target", "--json"]
    local = CliRunner().invoke(build_cli(), ["membership", "loss-threshold", "--model", "breast-cancer-mlp", *files])
    assert local.exit_code == 0, local.output
    with make_server(zoo.load("breast-cancer-mlp")) as srv:  # answers logits
        url = ["membership", "loss-threshold", "--model", "breast-cancer-mlp", "--url", srv.url + "/predict",
               "--timeout", "5", *files]
        undeclared = CliRunner().invoke(build_cli(), url)  # read as probabilities, logits gave AUC 0.55 vs 0.53
        remote = CliRunner().invoke(build_cli(), [*url, "--scores", "logits"])
    assert undeclared.exit_code == 4 and "not probabilities" in undeclared.output, undeclared.output
    assert "--scores logits" in undeclared.output
    assert remote.exit_code == 0, remote.output
    a, b = json.loads(local.output), json.loads(remote.output)
    assert b["model"].startswith("http://127.0.0.1") and b["n"] == a["n"] == 120
    assert b["auc"] == pytest.approx(a["auc"], abs=1e-6) and b["cost"]["queries"] > 0
    r = CliRunner().invoke(build_cli(), ["membership", "loss-threshold", "--timeout", "3"])
    assert r.exit_code == 3 and "--timeout applies to --url only" in r.output
