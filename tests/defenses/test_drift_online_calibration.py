"""``calibration_data`` for the online window detectors: streams simulated from held-out no-drift rows are scored
exactly as :meth:`update` scores live data against the whole reference; bad calibration data is a typed error."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from sparring.defenses.detect.drift import OnlineLSDD, OnlineMMD
from sparring.errors import InputSpecError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("cls", [OnlineMMD, OnlineLSDD])
def test_held_out_calibration_scores_streams_as_update_does(cls: type) -> None:
    x = torch.tensor(load_digits().data, dtype=torch.float64)
    ref, cal = x[:500], x[500:1300]
    det = cls(ref, ert=100, window_size=10, calibration_data=cal, n_bootstraps=200)
    thresholds = det.calibrate()
    assert len(thresholds) >= 1 and all(t == t for t in thresholds)
    idx = torch.arange(100, 100 + 10 + 40 - 1)
    sim = det._simulate_held_out(idx[None])[0]
    det.reset()
    det.thresholds = [float("inf")]  # no alarm, no reset: every statistic of the stream
    live = torch.tensor([s.statistic for i in idx if (s := det.update(cal[i])).statistic is not None],
                        dtype=torch.float64)
    assert live.shape == sim.shape and torch.allclose(sim, live, atol=1e-7, rtol=1e-9)
    plain = cls(ref, ert=100, window_size=10, n_bootstraps=200)
    assert plain.calibrate() != thresholds and plain.state_dict()["fingerprint"] != det.state_dict()["fingerprint"]


def test_calibration_data_of_another_width_or_too_few_rows_is_a_typed_error() -> None:
    x = torch.tensor(load_digits().data, dtype=torch.float64)
    with pytest.raises(InputSpecError, match="calibration_data has 63 features"):
        OnlineMMD(x[:300], window_size=10, calibration_data=x[300:600, :63]).calibrate()
    with pytest.raises(InputSpecError, match="calibration_data has 50 rows"):
        OnlineLSDD(x[:300], window_size=10, calibration_data=x[300:350]).calibrate()
