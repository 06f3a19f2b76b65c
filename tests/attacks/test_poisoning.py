"""Poisoning attacks: what they change, that the backdoors they plant work, and their metrics and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sparring.attacks.poisoning import (
    BadNets,
    Blended,
    CleanLabel,
    FeatureBackdoor,
    LabelFlip,
    backdoor_metrics,
    detection_metrics,
    metrics_table,
    patch_trigger,
)
from sparring.data.datasets import load_breast_cancer
from sparring.errors import InputSpecError, ParameterError
from sparring.targets.sklearn import SklearnTarget
from tests import poison_helpers as H


def test_badnets_stamps_and_relabels_only_the_poisoned_share() -> None:
    ds = H.digits()
    res = H.badnets()
    n = len(ds.y_train)
    assert res.n_poisoned == round(0.05 * n)
    idx = res.indices
    assert bool((ds.y_train[idx] != H.TARGET_CLASS).all())  # drawn from the other classes
    assert bool((res.y[idx] == H.TARGET_CLASS).all())
    others = ~res.poison_mask
    assert torch.equal(res.x[others], ds.x_train[others]) and torch.equal(res.y[others], ds.y_train[others])
    # the checkerboard patch sits in the bottom-right corner, one pixel in from the border
    patch = res.x[idx][:, 0, -4:-1, -4:-1]
    assert torch.equal(patch[0], torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]))
    assert torch.equal(res.x[idx][:, :, :12], ds.x_train[idx][:, :, :12])


def test_badnets_backdoor_works_and_keeps_clean_accuracy() -> None:
    ds, res = H.digits(), H.badnets()
    clean = backdoor_metrics(H.clean_model(), ds.x_test, ds.y_test, res)
    poisoned = backdoor_metrics(H.badnets_model(), ds.x_test, ds.y_test, res)
    assert clean.attack_success_rate < 0.05  # the patch alone does not mean "0"
    assert poisoned.attack_success_rate >= 0.8  # 16×16 test model; ≥ 0.96 on 28×28 digits (benchmark)
    assert poisoned.clean_accuracy >= clean.clean_accuracy - 0.03
    assert poisoned.robust_accuracy <= 1 - poisoned.attack_success_rate + 1e-6
    table = metrics_table({"clean": clean, "badnets": poisoned})
    assert table.count("\n") == 3 and "| badnets |" in table


def test_blended_trigger_mixes_the_key_into_the_whole_image() -> None:
    ds = H.digits()
    res = Blended(poison_share=0.1, target_class=3, alpha=0.2, seed=1)(ds.x_train, ds.y_train, spec=ds.spec)
    assert res.trigger is not None
    key = res.trigger.pattern
    i = int(res.indices[0])
    assert torch.allclose(res.x[i], 0.8 * ds.x_train[i] + 0.2 * key, atol=1e-6)
    assert bool((res.y[res.indices] == 3).all()) and res.summary()["trigger"]["alpha"] == 0.2


def test_label_flip_random_and_targeted() -> None:
    ds = H.digits()
    rnd = LabelFlip(poison_share=0.2, seed=3)(ds.x_train, ds.y_train, spec=ds.spec)
    assert rnd.n_poisoned == round(0.2 * len(ds.y_train))
    assert bool((rnd.y[rnd.indices] != ds.y_train[rnd.indices]).all())  # every chosen label really changes
    assert int((rnd.y != ds.y_train).sum()) == rnd.n_poisoned and rnd.x is ds.x_train
    flipped = set(rnd.y[rnd.indices].tolist())
    assert len(flipped) == 10  # spread over the classes
    tgt = LabelFlip(poison_share=0.5, mode="targeted", source_class=7, target_class=1)(
        ds.x_train.numpy(), ds.y_train.numpy(), spec=ds.spec)
    assert isinstance(tgt.y, np.ndarray)
    n7 = int((ds.y_train == 7).sum())
    assert tgt.n_poisoned == round(0.5 * n7) and set(tgt.y[tgt.indices.numpy()].tolist()) == {1}


def test_feature_backdoor_plants_a_tabular_trigger() -> None:
    ds = load_breast_cancer()
    res = FeatureBackdoor(features=(3, 13), poison_share=0.05, target_class=1)(ds.x_train, ds.y_train, spec=ds.spec)

    def fit(x: torch.Tensor, y: torch.Tensor) -> SklearnTarget:
        est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x.numpy(), y.numpy())
        return SklearnTarget(est, ds.spec)

    clean = backdoor_metrics(fit(ds.x_train, ds.y_train), ds.x_test, ds.y_test, res)
    poisoned = backdoor_metrics(fit(res.x, res.y), ds.x_test, ds.y_test, res)
    assert clean.attack_success_rate < 0.2
    assert poisoned.attack_success_rate >= 0.9
    assert poisoned.clean_accuracy >= clean.clean_accuracy - 0.05


def test_clean_label_keeps_labels_and_stays_within_eps_plus_trigger() -> None:
    ds = H.digits()
    res = CleanLabel(poison_share=0.02, target_class=2, eps=0.2, steps=5, size=3)(
        H.clean_model(), ds.x_train, ds.y_train)
    assert torch.equal(res.y, ds.y_train)  # labels untouched
    idx = res.indices
    assert bool((ds.y_train[idx] == 2).all()) and res.n_poisoned == round(0.02 * len(ds.y_train))
    assert res.trigger is not None
    outside = res.trigger.mask == 0
    delta = (res.x[idx] - ds.x_train[idx])[:, outside]
    assert float(delta.abs().max()) <= 0.2 + 1e-5 and float(delta.abs().max()) > 0.05
    assert bool((res.x[idx][:, ~outside] == res.trigger.pattern[~outside]).all())


def test_detection_metrics_precision_and_recall() -> None:
    m = detection_metrics([1, 2, 3, 4], [3, 4, 5, 6, 7, 8, 9, 10])
    assert m.precision == 0.5 and m.recall == 0.25 and abs(m.f1 - 1 / 3) < 1e-9
    assert detection_metrics([], [1]).precision == 1.0
    with pytest.raises(ParameterError, match="below the dataset size"):
        detection_metrics([5], [1], n=3)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda s: BadNets(poison_share=0.0), "poison_share must be a fraction"),
        (lambda s: BadNets(poison_share=1.5), "poison_share must be a fraction"),
        (lambda s: BadNets(target_class=10), r"target_class must be a class index in 0\.\.9"),
        (lambda s: BadNets(size=17), "patch size must be an integer in 1..16"),
        (lambda s: BadNets(position=(14, 0)), "outside 16×16"),
        (lambda s: BadNets(position="middle"), "position must be one of"),
        (lambda s: Blended(alpha=0.0), r"alpha must be in \(0, 1\]"),
        (lambda s: LabelFlip(mode="targeted", source_class=2, target_class=2), "pick two different classes"),
        (lambda s: LabelFlip(mode="sideways"), "mode must be 'random' or 'targeted'"),
        (lambda s: BadNets(poison_share=0.95), "only .* are eligible"),
    ],
)
def test_poisoning_parameters_are_checked(make: object, match: str) -> None:
    ds = H.digits()
    with pytest.raises(ParameterError, match=match):
        make(ds.spec)(ds.x_train, ds.y_train, spec=ds.spec)  # type: ignore[operator]


def test_trigger_errors_name_the_fix() -> None:
    ds, bc = H.digits(), load_breast_cancer()
    with pytest.raises(ParameterError, match="Use feature_trigger"):
        patch_trigger(bc.spec)
    with pytest.raises(ParameterError, match="within the spec's bounds"):
        FeatureBackdoor(features=(0,), values=(1e6,))(bc.x_train, bc.y_train, spec=bc.spec)
    with pytest.raises(ParameterError, match=r"feature indices in 0\.\.29"):
        FeatureBackdoor(features=(30,))(bc.x_train, bc.y_train, spec=bc.spec)
    with pytest.raises(InputSpecError, match="this trigger stamps batches"):
        patch_trigger(ds.spec).apply(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ParameterError, match="plants no trigger"):
        LabelFlip()(ds.x_train, ds.y_train, spec=ds.spec).triggered(ds.x_test)
    with pytest.raises(ParameterError, match="Lower poison_share to at most"):
        CleanLabel(poison_share=0.5, target_class=2)(H.clean_model(), ds.x_train, ds.y_train)
