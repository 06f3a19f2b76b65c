"""Online drift detectors: run lengths on held-out real data match the ERT they were calibrated to, real shifts are
found within a few windows, state round-trips exactly through JSON, bad input gets typed errors."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from sparring.data import Dataset, load_digits
from sparring.defenses.detect.drift import CUSUM, NonIIDReferenceWarning, OnlineLSDD, OnlineMMD, PageHinkley
from sparring.defenses.detect.drift._stream import hazard_thresholds
from sparring.errors import InputSpecError, ParameterError
from sparring.targets import TorchTarget

pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW = {"mmd": OnlineMMD, "lsdd": OnlineLSDD}
SCALAR = {"cusum": CUSUM, "page-hinkley": PageHinkley}


@pytest.fixture(scope="module")
def digits_split() -> dict[str, torch.Tensor]:
    """8×8 digits (64 features in [0, 1]): a 900-row reference, 897 held-out rows, their labels, and the held-out
    rows with Gaussian noise (sd 0.2, clipped)."""
    ds = load_digits(size=8)
    x = torch.cat([ds.x_train, ds.x_test]).reshape(-1, 64).double()
    y = torch.cat([ds.y_train, ds.y_test])
    p = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    held = x[p[900:]]
    noisy = (held + 0.2 * torch.randn(held.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    return {"ref": x[p[:900]], "held": held, "y_held": y[p[900:]], "noisy": noisy}


@pytest.fixture(scope="module")
def confidences(digits_cnn: TorchTarget, digits: Dataset) -> dict[str, np.ndarray]:
    """The digits CNN's top softmax probability on its training digits (reference), its test digits, and the test
    digits with Gaussian noise (sd 0.3, clipped)."""

    def conf(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(torch.softmax(digits_cnn.model(x.float()), 1).max(1).values.numpy(), np.float64)

    g = torch.Generator().manual_seed(2)
    noisy = (digits.x_test + 0.3 * torch.randn(digits.x_test.shape, generator=g)).clamp(0, 1)
    return {"ref": conf(digits.x_train), "held": conf(digits.x_test), "noisy": conf(noisy)}


def _run_length(det: Any, pool: Any, passes: int, seed: int) -> tuple[float, int]:
    """Empirical ERT on no-drift data: steps over alarms (streams still quiet at the end are censored), streaming
    ``passes`` fresh shuffles of ``pool``."""
    rng = np.random.default_rng(seed)
    steps = alarms = 0
    for _ in range(passes):
        det.reset()
        for i in rng.permutation(len(pool)):
            alarms += det.update(pool[int(i)]).drift
            steps += 1
    return steps / max(alarms, 1), alarms


def _delays(det: Any, clean: Any, shifted: Any, runs: int, prefix: int) -> tuple[list[int | None], int]:
    """Detection delay (steps after the change) over ``runs`` streams of ``prefix`` clean then shifted examples,
    and how many of them alarmed during the clean prefix."""
    out: list[int | None] = []
    early = 0
    for r in range(runs):
        rng = np.random.default_rng(100 + r)
        det.reset()
        if any(det.update(clean[int(i)]).drift for i in rng.permutation(len(clean))[:prefix]):
            early += 1
            det.reset()
        delay = next((k + 1 for k, i in enumerate(rng.permutation(len(shifted)))
                      if det.update(shifted[int(i)]).drift), None)
        out.append(delay)
    return out, early


# ----------------------------------------------------------------------------------------------- calibration
def test_pooled_steady_state_threshold_is_far_less_noisy_than_the_last_per_step_quantile() -> None:
    beta, exact = 0.01, -math.log(0.01)  # i.i.d. Exp(1) statistics: the 1 - beta quantile is ln(100)
    pooled, last = [], []
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        stats = -torch.log(torch.rand(2000, 40, generator=g, dtype=torch.float64))
        pooled.append(hazard_thresholds(stats, beta, pool_from=5)[-1])
        last.append(hazard_thresholds(stats, beta)[-1])
    assert max(abs(v - exact) for v in pooled) < 0.08, pooled
    assert max(abs(v - exact) for v in last) > 0.15, last  # ~ 20 exceedances per step: the old threshold


@pytest.mark.parametrize("name", list(WINDOW))
def test_window_detector_run_length_on_held_out_digits_is_within_20_percent_of_ert(
        digits_split: dict[str, torch.Tensor], name: str) -> None:
    det = WINDOW[name](digits_split["ref"], ert=100, window_size=10, seed=0)
    ert, alarms = _run_length(det, digits_split["held"], passes=15, seed=10)
    assert alarms > 100
    assert 80 <= ert <= 120, (ert, alarms)


@pytest.mark.parametrize("name", list(SCALAR))
def test_scalar_detector_run_length_on_held_out_confidences_is_within_20_percent_of_ert(
        confidences: dict[str, np.ndarray], name: str) -> None:
    det = SCALAR[name](confidences["ref"], ert=100, direction="both")
    ert, alarms = _run_length(det, confidences["held"], passes=50, seed=10)
    assert alarms > 150
    assert 80 <= ert <= 120, (ert, alarms)


# ----------------------------------------------------------------------------------------------- real shifts
@pytest.mark.parametrize("name", list(WINDOW))
def test_window_detector_finds_noise_and_class_knockout_within_a_few_windows(
        digits_split: dict[str, torch.Tensor], name: str) -> None:
    det = WINDOW[name](digits_split["ref"], ert=500, window_size=20, n_bootstraps=2000, seed=0)
    knocked = digits_split["held"][digits_split["y_held"] >= 5]  # classes 0-4 gone
    for shifted in (digits_split["noisy"], knocked):
        delays, early = _delays(det, digits_split["held"], shifted, runs=10, prefix=100)
        assert early <= 2, early  # P(alarm in 100 clean steps) is about 100 / 500
        assert all(d is not None for d in delays), delays
        assert float(np.median(delays)) <= 100, delays  # a clean stream would wait ~500 steps


@pytest.mark.parametrize("name", list(SCALAR))
def test_scalar_detector_finds_the_confidence_drop_under_noise(confidences: dict[str, np.ndarray],
                                                             name: str) -> None:
    det = SCALAR[name](confidences["ref"], ert=500, direction="down")
    delays, early = _delays(det, confidences["held"], confidences["noisy"], runs=10, prefix=100)
    assert early <= 2, early
    assert all(d is not None for d in delays), delays
    assert float(np.median(delays)) <= 120, delays


@pytest.mark.parametrize("name", list(SCALAR))
def test_winsorized_detector_ignores_one_extreme_value_but_finds_the_noise_shift(
        confidences: dict[str, np.ndarray], name: str) -> None:
    plain = SCALAR[name](confidences["ref"], ert=500, direction="down")
    clipped = SCALAR[name](confidences["ref"], ert=500, direction="down", winsorize=0.05)
    for v in confidences["held"][:20]:  # Page–Hinkley measures change from the stream's own running mean
        assert not plain.update(v).drift and not clipped.update(v).drift
    assert plain.update(-1e3).drift  # one absurd value is a 10^4-sd drop for the plain detector
    assert not clipped.update(-1e3).drift  # clipped to the reference's 5% quantile
    delays, early = _delays(clipped, confidences["held"], confidences["noisy"], runs=10, prefix=100)
    assert early <= 2 and all(d is not None for d in delays), (early, delays)
    assert float(np.median(delays)) <= 120, delays


# ----------------------------------------------------------------------------------------------- state
@pytest.mark.parametrize("name", [*WINDOW, *SCALAR])
def test_state_round_trips_through_json_and_continues_exactly(
        digits_split: dict[str, torch.Tensor], confidences: dict[str, np.ndarray], name: str) -> None:
    if name in WINDOW:
        ref, stream = digits_split["ref"], torch.cat([digits_split["held"][:30], digits_split["noisy"][:40]])
        make = lambda: WINDOW[name](ref, ert=200, window_size=10, n_bootstraps=500)  # noqa: E731
    else:
        ref, stream = confidences["ref"], np.r_[confidences["held"][:30], confidences["noisy"][:40]]
        make = lambda: SCALAR[name](ref, ert=200, n_bootstraps=500)  # noqa: E731
    a = make()
    for v in stream[:25]:
        a.update(v)
    state = json.loads(json.dumps(a.state_dict()))
    b = make()
    b.load_state_dict(state)
    for v in stream[25:]:
        sa, sb = a.update(v), b.update(v)
        assert sa == sb
    other = (WINDOW[name](ref[:400], ert=200, window_size=10, n_bootstraps=500) if name in WINDOW
             else SCALAR[name](ref[:500], ert=200, n_bootstraps=500))
    with pytest.raises(ParameterError, match="different reference"):
        other.load_state_dict(state)
    with pytest.raises(ParameterError, match="not a"):
        b.load_state_dict({"version": 99})


# ----------------------------------------------------------------------------------------------- bad input
def test_window_detectors_refuse_bad_input(digits_split: dict[str, torch.Tensor]) -> None:
    ref = digits_split["ref"]
    for cls in WINDOW.values():
        det = cls(ref, ert=100, window_size=10, n_bootstraps=200)
        with pytest.raises(InputSpecError, match="63 features; the reference has 64"):
            det.update(ref[0, :63])
        bad = ref[0].clone()
        bad[5] = float("nan")
        with pytest.raises(InputSpecError, match="NaN or inf"):
            det.update(bad)
        with pytest.raises(InputSpecError, match="0 features"):
            det.update(np.zeros(0))  # an empty example
        with pytest.raises(InputSpecError, match="needs at least"):
            cls(ref[:150], ert=100, window_size=20).update(ref[0])  # reference too small for the window
        with pytest.raises(ParameterError, match="ert"):
            cls(ref, ert=5, window_size=10).update(ref[0])
        with pytest.raises(ParameterError, match="window_size"):
            cls(ref, window_size=1).update(ref[0])
    with pytest.raises(InputSpecError, match="same point"):
        OnlineMMD(np.ones((300, 4)), ert=100, window_size=10).update(np.ones(4))
    with pytest.raises(InputSpecError, match="0 examples"):
        OnlineLSDD(np.zeros((0, 4))).update(np.ones(4))
    with pytest.raises(ParameterError, match="standardise"):
        OnlineLSDD(ref, ert=100, window_size=10, standardise="pixel").update(ref[0])


def test_streams_without_replacement_are_distinct_rows_at_any_size() -> None:
    from sparring.defenses.detect.drift._stream import stream_indices

    for n, count in [(300, 50), (20_000, 1_000)]:  # one sort of a random matrix; one choice per stream
        idx = stream_indices(n, 99, count, 1, np.random.default_rng(0), replace=False)
        assert idx.shape == (count, 99) and idx.max() < n
        assert all(len(set(row.tolist())) == 99 for row in idx)
        blocks = stream_indices(n, 99, count, 10, np.random.default_rng(0), replace=False)
        assert all(len(set(row.tolist())) == 99 for row in blocks) and (np.diff(blocks[:, :10], axis=1) == 1).all()


def test_scalar_detectors_refuse_bad_input(confidences: dict[str, np.ndarray]) -> None:
    ref = confidences["ref"]
    for cls in SCALAR.values():
        with pytest.raises(InputSpecError, match="constant"):
            cls(np.full(100, 0.9)).update(0.9)
        with pytest.raises(InputSpecError, match="at least 20"):
            cls(ref[:5]).update(0.9)
        with pytest.raises(InputSpecError, match="NaN"):
            cls(np.r_[ref[:50], np.nan]).update(0.9)
        det = cls(ref, ert=100, n_bootstraps=200)
        with pytest.raises(InputSpecError, match="one scalar per step"):
            det.update(ref[:3])
        with pytest.raises(InputSpecError, match="x has 0 values"):
            det.update(np.zeros(0))
        with pytest.raises(ParameterError, match="direction"):
            cls(ref, direction="sideways").update(0.9)
        with pytest.raises(ParameterError, match="winsorize"):
            cls(ref, winsorize=0.7).update(0.9)
    with pytest.raises(ParameterError, match="k must be"):
        CUSUM(ref, k=-1).update(0.9)


def test_serially_dependent_reference_warns_and_block_bootstrap_is_quiet(
        digits_split: dict[str, torch.Tensor]) -> None:
    x = digits_split["ref"]
    ink = x.mean(1).numpy()  # a scalar signal: each digit's mean intensity
    ordered = np.sort(ink)  # sorted: strongly autocorrelated
    with pytest.warns(NonIIDReferenceWarning, match="serially dependent"):
        CUSUM(ordered, ert=100, n_bootstraps=200).calibrate()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CUSUM(ordered, ert=100, n_bootstraps=200, bootstrap="block", block_length=20).calibrate()
        CUSUM(ink, ert=100, n_bootstraps=200).calibrate()
    by_ink = x[x.sum(1).argsort()]
    with pytest.warns(NonIIDReferenceWarning):
        OnlineLSDD(by_ink, ert=100, window_size=10, n_bootstraps=200).calibrate()


def test_dependence_check_rarely_warns_on_random_orders_of_sparse_pixels(
        digits_split: dict[str, torch.Tensor]) -> None:
    from sparring.defenses.detect.drift.result import lag1_pvalue

    x = torch.cat([digits_split["ref"], digits_split["held"]])
    warned = sum(lag1_pvalue(x[torch.randperm(len(x), generator=torch.Generator().manual_seed(s))[:500]]) < 0.01
                 for s in range(100))
    assert warned <= 4, warned  # nominal 1%; testing each pixel separately warned on ~9%
