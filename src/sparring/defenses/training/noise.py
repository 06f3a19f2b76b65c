"""Gaussian noise augmentation: the base-classifier training behind randomized smoothing.

Cohen, Rosenfeld & Kolter (2019), "Certified Adversarial Robustness via Randomized Smoothing", section 4 and
appendix: the smoothed classifier ``g(x) = argmax_c P(f(x + ε) = c)``, ``ε ~ N(0, σ²I)``, is only as good as the
base classifier ``f`` is under noise, so ``f`` is trained on noisy copies ``x + ε`` with the same ``σ`` that will
be used to certify. The noise lives in raw input space (the space of ``InputSpec.bounds`` and of every budget) and
is not clipped to the bounds; the spec's normalisation is applied after the noise, as :class:`TorchTarget` does.

>>> from sparring.defenses.training.noise import noisy_digits_target
>>> target = noisy_digits_target(0.25, size=8, epochs=5)  # a tiny MLP on 8×8 digits, seconds on a CPU
>>> target.spec.shape
(1, 8, 8)
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from sparring._progress import progress_bar
from sparring._util import reinit_parameters
from sparring.data import models
from sparring.data.cache import cache_dir, load_state, save_state
from sparring.data.datasets import Dataset, load_digits
from sparring.errors import ParameterError
from sparring.targets.spec import InputSpec
from sparring.targets.torch import TorchTarget

__all__ = ["noisy_digits_target", "train_with_noise"]

_DIGITS_NORM = ((0.2,), (0.3,))  # the zoo digits-cnn normalisation, applied inside the target
_VERSION = 1


def _check_sigma(sigma: object) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not math.isfinite(sigma) or sigma < 0:
        raise ParameterError(f"sigma (noise standard deviation) must be a finite number >= 0; got {sigma!r}.")
    return float(sigma)


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"{name} must be a positive integer; got {value!r}.")
    return value


def train_with_noise(
    model: nn.Module,
    dataset: Dataset,
    spec: InputSpec,
    *,
    sigma: float,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """Train ``model`` with cross-entropy on ``x + N(0, σ²I)`` (Cohen et al. 2019, Gaussian data augmentation).

    The model is re-initialised, then trained with Adam on the dataset's training split. Each batch gets fresh
    noise in raw input space (not clipped); ``spec.mean``/``spec.std`` are applied after the noise, so the trained
    model is used through ``TorchTarget(model, spec)`` exactly as it was trained. ``sigma=0`` is plain training.

    Deterministic for a ``seed`` on a given machine: initialisation, shuffling and noise come from private
    generators; the global RNG state is left untouched.

    Args:
        model: maps a normalised batch ``(N, *spec.shape)`` to ``(N, n_classes)`` logits; trained on its device.
        dataset: training data (``x_train`` in raw space, within ``spec.bounds``).
        spec: the input spec (bounds, normalisation) the model will be served with.
        sigma: noise standard deviation in raw input units; certify with the same value.
        epochs: passes over the training set.
        lr: Adam learning rate.
        batch_size: examples per step.
        seed: seed of initialisation, shuffling and noise.
        progress: draw a progress bar over epochs.

    Returns:
        ``model``, trained and in eval mode.
    """
    if not isinstance(model, nn.Module):
        raise ParameterError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    if not isinstance(spec, InputSpec):
        raise ParameterError(f"spec must be an InputSpec; got {type(spec).__name__}.")
    s = _check_sigma(sigma)
    _check_positive_int(epochs, "epochs")
    _check_positive_int(batch_size, "batch_size")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ParameterError(f"lr must be a finite number > 0; got {lr!r}.")
    x_all, y_all = spec.validate(dataset.x_train, dataset.y_train)
    assert y_all is not None
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x_all, y_all = x_all.to(dev, dtype), y_all.to(dev)
    norm = spec.norm_tensors(dev, dtype)

    reinit_parameters(model, seed)
    order_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in progress_bar(range(epochs), total=epochs, description=f"noise training σ={s:g}", enabled=progress):
        perm = torch.randperm(len(x_all), generator=order_gen).to(dev)
        for start in range(0, len(x_all), batch_size):
            idx = perm[start : start + batch_size]
            xb = x_all[idx]
            if s > 0:
                xb = xb + s * torch.randn(xb.shape, generator=noise_gen, device=dev, dtype=dtype)
            if norm is not None:
                xb = (xb - norm[0]) / norm[1]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(xb), y_all[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


def noisy_digits_target(
    sigma: float,
    *,
    size: int = 28,
    epochs: int = 12,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    cache: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> TorchTarget:
    """A digits classifier trained with Gaussian noise ``σ``, ready to smooth with the same ``σ``.

    ``size=28``: the zoo's ``digits-cnn`` architecture on 1×28×28 digits (about 2.5 s per epoch on a 2-core CPU).
    ``size=8``: the zoo's MLP on the native 8×8 digits (a fraction of a second per epoch; for tests and examples).
    Both normalise inside the target like the zoo model (mean 0.2, std 0.3). Pixels are in [0, 1].

    With ``cache=True`` the weights are stored as a checksummed state dict in
    :func:`~sparring.data.cache.cache_dir` under ``noise/``, keyed by size, σ, epochs, lr, batch size, seed and the
    torch version, and read back on later calls.

    Args:
        sigma: noise standard deviation in pixel units (e.g. 0.25 or 0.5).
        size: 28 (CNN) or 8 (MLP).
        epochs, lr, batch_size, seed, progress: see :func:`train_with_noise`.
        cache: read and write the trained weights in the cache directory.
        device: where the returned target's model lives.
    """
    s = _check_sigma(sigma)
    if size not in (8, 28):
        raise ParameterError(f"size must be 8 (MLP on native digits) or 28 (CNN on upsampled digits); got {size!r}.")
    ds = load_digits(size)
    base = ds.spec.to_dict()
    base["mean"], base["std"] = list(_DIGITS_NORM[0]), list(_DIGITS_NORM[1])
    spec = InputSpec.from_dict(base)
    model: nn.Module = models.digits_cnn() if size == 28 else models.digits_mlp(side=8)
    torch_version = torch.__version__.split("+")[0]
    key = f"digits{size}-sigma{s:g}-e{epochs}-lr{lr:g}-b{batch_size}-s{seed}-v{_VERSION}-torch{torch_version}"
    path = cache_dir() / "noise" / f"{key}.pt"
    state = load_state(path) if cache else None
    if state is not None:
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError) as exc:
            warnings.warn(f"cached model {path} does not fit ({exc}); retraining.", RuntimeWarning, stacklevel=2)
            state = None
    if state is None:
        train_with_noise(model, ds, spec, sigma=s, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                         progress=progress)
        if cache:
            save_state(path, model.state_dict())
    return TorchTarget(model.to(device).eval(), spec)
