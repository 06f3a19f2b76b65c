"""Building what ``guard.yaml`` names: the served target, the data references and the calibrated detectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sparring.errors import GuardConfigError, SparringError
from sparring.guard.config import DataRef, DetectorConfig, GuardConfig
from sparring.targets.base import Target

__all__ = ["GuardDetector", "build_detectors", "load_data_ref", "load_model"]


@dataclass
class GuardDetector:
    """A calibrated detector with its policy; ``detector.score(x)`` is higher for more suspicious inputs."""

    name: str
    kind: str
    policy: str
    detector: Any

    @property
    def threshold(self) -> float:
        return float(self.detector.threshold)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        s = self.detector.score(x)
        return torch.as_tensor(np.asarray(s) if not isinstance(s, torch.Tensor) else s).detach().double().cpu()


def _zoo_name(cfg: GuardConfig) -> str | None:
    from sparring.data import zoo

    m = cfg.model
    name = m.source if m.source is not None else m.spec
    return name if name in zoo.names() else None


def load_model(cfg: GuardConfig) -> Target:
    """The target ``model:`` names: a zoo model or model file in-process, or the upstream API as an HttpTarget."""
    from sparring.data import zoo
    from sparring.targets.load import load_spec, load_target

    m = cfg.model
    spec_name = m.spec
    try:
        if m.upstream is not None:
            from sparring.targets.http import HttpTarget

            assert spec_name is not None
            spec = zoo.entry(spec_name).spec() if spec_name in zoo.names() else load_spec(cfg.resolve(spec_name))
            return HttpTarget(m.upstream, spec, score_kind=m.score_kind, timeout=m.timeout, retries=0,
                              batch_size=cfg.limits.max_batch)
        assert m.source is not None
        source = m.source if m.source in zoo.names() else str(cfg.resolve(m.source))
        spec_arg = None if spec_name is None else (zoo.entry(spec_name).spec() if spec_name in zoo.names()
                                                   else cfg.resolve(spec_name))
        return load_target(source, spec=spec_arg, entry_point=m.entry_point, trust_pickle=m.trust_pickle)
    except SparringError:
        raise
    except KeyError as exc:
        raise GuardConfigError(f"model: unknown zoo name {exc}; zoo models: {', '.join(zoo.names())}.") from None


def load_data_ref(ref: DataRef, cfg: GuardConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x, y)`` named by a ``data:`` reference (see :mod:`sparring.guard.config`), sliced by start/stop."""
    from sparring.data import zoo

    name, _, split = ref.data.rpartition(":")
    if not name and ref.data in ("train", "test"):
        name, split = _zoo_name(cfg) or "", ref.data
        if not name:
            raise GuardConfigError(f"data: {ref.data!r} means the served zoo model's own split, but the model is not "
                                   "a zoo model; give a data file (.npz with x and y).")
    if name in zoo.names() and split in ("train", "test"):
        ds = zoo.data(name)
        x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    else:
        from sparring.data.files import load_data

        d = load_data(cfg.resolve(ref.data))
        x = torch.as_tensor(np.asarray(d.x), dtype=torch.float32)
        y = None if d.y is None else torch.as_tensor(np.asarray(d.y), dtype=torch.long)
    x = x[ref.start : ref.stop]
    y = None if y is None else y[ref.start : ref.stop]
    if x.shape[0] == 0:
        raise GuardConfigError(f"data: {ref.data!r}[{ref.start}:{ref.stop}] is empty; widen start/stop.")
    return x, y


def _build_one(d: DetectorConfig, target: Target, cfg: GuardConfig) -> GuardDetector:
    from sparring.defenses.detect.features import EnergyDetector, MahalanobisDetector, MaxSoftmaxDetector
    from sparring.defenses.detect.squeezing import FeatureSqueezingDetector

    det: Any
    if d.kind == "mahalanobis":
        assert d.fit is not None
        xf, yf = load_data_ref(d.fit, cfg)
        if yf is None:
            raise GuardConfigError(f"detectors ({d.label}).fit: {d.fit.data!r} has no labels; mahalanobis fits class "
                                   "means and needs them.")
        det = MahalanobisDetector(target, threshold=d.threshold).fit(xf, yf)
        if d.combine is not None:
            from sparring.attacks.evasion.fgsm import FGSM

            xc, yc = load_data_ref(d.combine, cfg)
            if yc is None:
                raise GuardConfigError(f"detectors ({d.label}).combine: {d.combine.data!r} has no labels; FGSM needs "
                                       "them.")
            det.fit_combiner(xc, FGSM(eps=d.combine.eps)(target, xc, yc).x_adv)
    elif d.kind == "energy":
        det = EnergyDetector(target, threshold=d.threshold)
    elif d.kind == "max-softmax":
        det = MaxSoftmaxDetector(target, threshold=d.threshold)
    else:
        det = FeatureSqueezingDetector(target, threshold=d.threshold)
    if d.calibrate is not None:
        xc, _ = load_data_ref(d.calibrate, cfg)
        if d.kind == "squeezing":
            det.fit(xc, fpr=d.calibrate.fpr)
        else:
            det.calibrate(xc, fpr=d.calibrate.fpr)
    return GuardDetector(d.label, d.kind, d.policy, det)


def build_detectors(cfg: GuardConfig, target: Target) -> list[GuardDetector]:
    """Every configured detector, fitted and calibrated (raises a typed error naming the detector)."""
    out = []
    for d in cfg.detectors:
        try:
            out.append(_build_one(d, target, cfg))
        except GuardConfigError:
            raise
        except SparringError as exc:
            raise GuardConfigError(f"detector {d.label!r} ({d.kind}) could not be set up: {exc}") from exc
    return out
