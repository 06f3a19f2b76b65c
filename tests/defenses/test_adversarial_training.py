"""Adversarial training (PGD-AT, TRADES, fast FGSM): it buys robustness, stays in budget, resumes bit for bit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from sparring import zoo
from sparring.attacks.evasion.pgd import PGD
from sparring.attacks.norms import Norm
from sparring.data.datasets import Dataset, load_digits
from sparring.defenses.training.adversarial import METHODS, EpochStats, TrainHistory, adversarial_train
from sparring.defenses.training.objectives import cyclic_lr, inner_attack
from sparring.errors import CheckpointError, ParameterError
from sparring.targets.spec import InputSpec
from sparring.targets.torch import TorchTarget

EPS = 0.2  # on the native 8×8 digits a plain MLP keeps < 10% under PGD-20 at this budget
EPOCHS = 3
N_EVAL = 128
Pair = tuple[torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def digits8() -> Dataset:
    return load_digits(8)


@pytest.fixture(scope="module")
def small8(digits8: Dataset) -> Pair:
    """256 training digits: enough to check the mechanics (determinism, checkpoints) in a fraction of a second."""
    return digits8.x_train[:256], digits8.y_train[:256]


@pytest.fixture(scope="module")
def spec8(digits8: Dataset) -> InputSpec:
    d = digits8.spec.to_dict()
    d["mean"], d["std"] = [0.2], [0.3]  # normalised inside the target, like the zoo CNN
    return InputSpec.from_dict(d)


def _mlp(dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 10))


def _train(spec: InputSpec, ds: Any, **kw: Any) -> tuple[TorchTarget, TrainHistory]:
    target = TorchTarget(_mlp(kw.pop("dropout", 0.0)), spec)
    args: dict[str, Any] = {"eps": EPS, "steps": 5, "epochs": EPOCHS, "lr": 3e-3, "seed": 0} | kw
    return target, adversarial_train(target, ds, **args)


def _accuracies(target: TorchTarget, ds: Dataset) -> tuple[float, float]:
    res = PGD(eps=EPS, steps=20)(target, ds.x_test[:N_EVAL], ds.y_test[:N_EVAL])
    return res.clean_accuracy, res.robust_accuracy


@pytest.fixture(scope="module")
def plain(spec8: InputSpec, digits8: Dataset) -> tuple[float, float]:
    """Clean and PGD-20 accuracy of the same MLP, same seed, data order and epochs, trained with eps=0."""
    target, _ = _train(spec8, digits8, eps=0.0, steps=1)
    return _accuracies(target, digits8)


def test_plain_training_is_a_fair_baseline(plain: tuple[float, float]) -> None:
    clean, robust = plain
    assert clean >= 0.85 and robust <= 0.15


@pytest.mark.parametrize("method", METHODS)
def test_adversarial_training_raises_pgd_robust_accuracy_over_plain_training(
    method: str, spec8: InputSpec, digits8: Dataset, plain: tuple[float, float]
) -> None:
    target, history = _train(spec8, digits8, method=method)
    clean, robust = _accuracies(target, digits8)
    # measured: plain 0.06; pgd 0.31, trades 0.30, fast-fgsm 0.27 (128 test digits, PGD-20, eps 0.2, 3 epochs)
    assert robust >= plain[1] + 0.15, (method, robust, plain)
    assert clean >= 0.8  # the price in clean accuracy stays small
    assert not target.model.training
    assert all(p.requires_grad for p in target.model.parameters())
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    assert history.epochs[-1].loss < history.epochs[0].loss


@pytest.mark.parametrize(("method", "norm"), [(m, n) for m in METHODS for n in ("linf", "l2")
                                              if not (m == "fast-fgsm" and n == "l2")])  # fast FGSM is L∞ only
def test_inner_attack_stays_within_eps_and_bounds(method: str, norm: str, digits8: Dataset) -> None:
    nrm = Norm.parse(norm)
    eps = 0.3 if nrm is Norm.LINF else 1.5
    net = _mlp()
    x, y = digits8.x_test[:64], digits8.y_test[:64]
    lo, hi = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    xa = inner_attack(net, x, y, method=method, norm=nrm, eps=eps, alpha=eps / 2, steps=4, low=lo, high=hi,
                       gen=torch.Generator().manual_seed(0))
    delta = (xa - x).flatten(1)
    size = delta.abs().amax(1) if nrm is Norm.LINF else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-5
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    assert float(size.mean()) > eps / 4  # it moved
    if method != "trades":  # the cross-entropy went up on average
        with torch.no_grad():
            ce = nn.functional.cross_entropy
            assert float(ce(net(xa), y)) > float(ce(net(x), y))


def test_history_records_eval_accuracy_and_round_trips_as_json(
    spec8: InputSpec, digits8: Dataset, small8: Pair
) -> None:
    _, history = _train(spec8, small8, epochs=2, steps=2, eval_data=(digits8.x_test[:64], digits8.y_test[:64]),
                        eval_steps=5, progress=True)
    for e in history.epochs:
        assert e.clean_accuracy is not None and e.robust_accuracy is not None
        assert 0.0 <= e.robust_accuracy <= e.clean_accuracy <= 1.0
        assert e.seconds > 0 and 0.0 <= e.train_robust_accuracy <= 1.0
    d = json.loads(json.dumps(history.to_dict()))
    assert TrainHistory.from_dict(d) == history
    assert d["params"]["alpha"] == pytest.approx(2.5 * EPS / 2) and history.resumed_from is None


def test_same_seed_gives_identical_weights_and_leaves_the_global_rng_alone(
    spec8: InputSpec, small8: Pair
) -> None:
    a = TorchTarget(_mlp(0.2), spec8)  # building the layers draws from the global RNG; training must not
    before = torch.get_rng_state()
    adversarial_train(a, small8, eps=EPS, steps=2, epochs=1, lr=3e-3)
    assert torch.equal(torch.get_rng_state(), before)
    b, _ = _train(spec8, small8, epochs=1, steps=2, dropout=0.2)
    c, _ = _train(spec8, small8, epochs=1, steps=2, dropout=0.2, seed=1)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_a_dataloader_trains_exactly_like_the_tensors_it_holds(spec8: InputSpec, small8: Pair) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(*small8), batch_size=50, shuffle=False)
    a, _ = _train(spec8, loader, epochs=1, steps=2)
    b, _ = _train(spec8, small8, epochs=1, steps=2)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ParameterError, match="no batches"):
        adversarial_train(TorchTarget(_mlp(), spec8), DataLoader(TensorDataset(small8[0][:0], small8[1][:0])),
                          eps=0.1)


class _Stop(Exception):
    """Stands for the process being killed after an epoch."""


def _stop_after(epoch: int) -> Any:
    def callback(stats: EpochStats) -> None:
        if stats.epoch == epoch:
            raise _Stop

    return callback


@pytest.mark.parametrize(("method", "schedule"), [(m, "constant") for m in METHODS] + [("pgd", "cyclic")])
def test_resume_after_interruption_gives_identical_weights(
    method: str, schedule: str, spec8: InputSpec, small8: Pair, tmp_path: Path
) -> None:
    kw: dict[str, Any] = {"method": method, "schedule": schedule, "steps": 2, "dropout": 0.2}
    ref, ref_hist = _train(spec8, small8, **kw)

    with pytest.raises(_Stop):
        _train(spec8, small8, checkpoint_dir=tmp_path, callback=_stop_after(1), **kw)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["epoch-0001.pt"]
    resumed, hist = _train(spec8, small8, checkpoint_dir=tmp_path, **kw)  # a fresh model, as in a new process

    assert hist.resumed_from == 1 and [e.epoch for e in hist.epochs] == [1, 2, 3]
    assert [e.loss for e in hist.epochs] == [e.loss for e in ref_hist.epochs]
    sr, sn = ref.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sr[k], sn[k]) for k in sr)


def test_epochs_can_grow_between_calls(spec8: InputSpec, small8: Pair, tmp_path: Path) -> None:
    ref, _ = _train(spec8, small8, steps=1, epochs=2)
    _train(spec8, small8, steps=1, epochs=1, checkpoint_dir=tmp_path)
    grown, hist = _train(spec8, small8, steps=1, epochs=2, checkpoint_dir=tmp_path)
    assert hist.resumed_from == 1
    assert all(torch.equal(v, grown.model.state_dict()[k]) for k, v in ref.model.state_dict().items())


def test_resume_false_starts_over(spec8: InputSpec, small8: Pair, tmp_path: Path) -> None:
    _train(spec8, small8, steps=1, epochs=1, checkpoint_dir=tmp_path)
    _, hist = _train(spec8, small8, steps=1, epochs=1, checkpoint_dir=tmp_path, resume=False)
    assert hist.resumed_from is None and len(hist.epochs) == 1


def test_checkpoint_of_another_run_is_refused(spec8: InputSpec, small8: Pair, tmp_path: Path) -> None:
    _train(spec8, small8, steps=1, epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="eps"):
        _train(spec8, small8, steps=1, epochs=2, checkpoint_dir=tmp_path, eps=0.1)
    with pytest.raises(CheckpointError, match="data"):
        _train(spec8, (small8[0][:128], small8[1][:128]), steps=1, epochs=2, checkpoint_dir=tmp_path)


def test_cyclic_schedule_is_one_cycle_and_fixes_the_epochs(spec8: InputSpec, small8: Pair, tmp_path: Path) -> None:
    lrs = [cyclic_lr(1.0, t / 10, 5) for t in range(51)]
    assert lrs[0] == 0.0 and lrs[20] == pytest.approx(1.0) and lrs[-1] == 0.0 and max(lrs) == lrs[20]
    _train(spec8, small8, steps=1, epochs=1, schedule="cyclic", checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="epochs"):  # the schedule depends on the total number of epochs
        _train(spec8, small8, steps=1, epochs=2, schedule="cyclic", checkpoint_dir=tmp_path)


def test_corrupted_last_checkpoint_falls_back_to_the_one_before(
    spec8: InputSpec, small8: Pair, tmp_path: Path
) -> None:
    ref, _ = _train(spec8, small8, steps=1, epochs=3)
    _train(spec8, small8, steps=1, epochs=2, checkpoint_dir=tmp_path)
    last = tmp_path / "epoch-0002.pt"
    last.write_bytes(last.read_bytes()[:100])  # a crash mid-write on a filesystem without atomic rename
    with pytest.warns(RuntimeWarning, match="corrupted"):
        resumed, hist = _train(spec8, small8, steps=1, epochs=3, checkpoint_dir=tmp_path)
    assert hist.resumed_from == 1
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in ref.model.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "free"}, "method"),
        ({"eps": -0.1}, "eps"),
        ({"eps": 2.0}, "eps"),
        ({"norm": "l1"}, "norm"),
        ({"method": "fast-fgsm", "norm": "l2"}, "L∞"),
        ({"steps": 0}, "steps"),
        ({"alpha": 0.0}, "alpha"),
        ({"beta": -1.0}, "beta"),
        ({"epochs": 0}, "epochs"),
        ({"lr": float("nan")}, "lr"),
        ({"schedule": "cosine"}, "schedule"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"eval_steps": 0}, "eval_steps"),
        ({"checkpoint_dir": 3}, "checkpoint_dir"),
    ],
)
def test_bad_parameters_raise_parameter_error(
    kwargs: dict[str, Any], match: str, spec8: InputSpec, digits8: Dataset
) -> None:
    args: dict[str, Any] = {"eps": 0.1, "epochs": 1} | kwargs
    with pytest.raises(ParameterError, match=match):
        adversarial_train(TorchTarget(_mlp(), spec8), digits8, **args)


def test_bad_target_and_data_raise_parameter_error(spec8: InputSpec, digits8: Dataset) -> None:
    with pytest.raises(ParameterError, match="TorchTarget"):
        adversarial_train(_mlp(), digits8, eps=0.1)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="Dataset"):
        adversarial_train(TorchTarget(_mlp(), spec8), digits8.x_train, eps=0.1)


@pytest.mark.parametrize("name", ["digits-cnn-pgdat", "digits-cnn-trades"])
def test_adversarial_zoo_entries_are_digits_cnn_with_another_training_recipe(name: str) -> None:
    base, entry = zoo.entry("digits-cnn"), zoo.entry(name)
    assert entry.spec() == base.spec() and entry.train is not None and base.train is None
    shapes = {k: v.shape for k, v in base.build().state_dict().items()}
    assert {k: v.shape for k, v in entry.build().state_dict().items()} == shapes


@pytest.mark.slow  # trains the adversarial CNN once (≈ 30 s of CPU; 1-2.5 min of wall time on a busy 2-core box)
@pytest.mark.parametrize("name", ["digits-cnn-pgdat", "digits-cnn-trades"])
def test_zoo_adversarially_trained_cnn_is_accurate_and_far_more_robust_than_digits_cnn(
    name: str, digits_cnn: TorchTarget, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_batch
    robust = zoo.load(name)
    attack = PGD(eps=0.1, steps=20)
    res, base = attack(robust, x, y), attack(digits_cnn, x, y)
    assert res.clean_accuracy >= 0.95
    assert res.robust_accuracy >= base.robust_accuracy + 0.3, (res.robust_accuracy, base.robust_accuracy)
    assert robust.spec == digits_cnn.spec  # same input spec and normalisation as digits-cnn
