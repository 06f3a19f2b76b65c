"""STRIP: run-time detection of trojaned inputs (Gao, Xu, Wang, Chen, Ranasinghe, Nepal 2019, "STRIP: A Defence
Against Trojan Attacks on Deep Neural Networks", ACSAC).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sparring.errors import InputSpecError, ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access

__all__ = ["STRIP"]


class STRIP:
    r"""STRIP (Gao et al. 2019): superimpose an input on clean images and measure how much the prediction moves.

    Threat model: the defender holds a few clean inputs and sees the model's scores at run time. A clean input
    blended with other clean images gets varied predictions (high entropy); an input carrying a backdoor trigger
    keeps being sent to the target class, since the trigger survives the blend (low entropy). The score of ``x`` is
    the mean Shannon entropy of the predictions on ``n_overlays`` superimpositions
    :math:`x_i = \mathrm{clip}(x + \alpha (c_i - \ell))` with clean images :math:`c_i` and the lower bound
    :math:`\ell` (the paper adds the two images at full weight, ``alpha = 1``, eq. 1-2; an averaged blend would
    halve a patch trigger and hide it); :meth:`fit` sets the threshold at the ``frr`` quantile of clean inputs'
    entropies (the paper's false-rejection rate), and :meth:`detect` flags inputs whose entropy is below it.
    Each scored input costs ``n_overlays`` queries.

    STRIP is weak against triggers that blend away (low-opacity, image-wide blended keys) and against adaptive
    attackers who train for high entropy; report it per trigger kind.

    Args:
        target: the classifier (score access).
        x_overlay: clean inputs to superimpose (held out: not those used to fit or evaluate).
        n_overlays: blends per input (the paper uses 100; 32 is cheaper and stable here).
        alpha: weight of the overlaid clean image (1: the paper's plain addition).
        seed: seed of the default generator choosing the overlays.
    """

    def __init__(self, target: Target, x_overlay: Any, *, n_overlays: int = 32, alpha: float = 1.0,
                 seed: int = 0) -> None:
        if not isinstance(target, Target):
            raise ParameterError(f"target must be a sparring Target; got {type(target).__name__}.")
        target.require(Access.SCORES, "STRIP")
        if not isinstance(n_overlays, int) or n_overlays < 2:
            raise ParameterError(f"n_overlays must be an integer >= 2, e.g. 32; got {n_overlays!r}.")
        if not 0 < alpha <= 1:
            raise ParameterError(f"alpha must be in (0, 1], e.g. 1.0; got {alpha!r}.")
        pool, _ = target.spec.validate(x_overlay)
        self.target = target
        self.pool = pool.to(target.device)
        self.n_overlays = n_overlays
        self.alpha = alpha
        self.seed = seed
        self.threshold: float | None = None

    def entropy(self, x: Any, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean prediction entropy over the blends of each input (nats), ``(N,)`` on the target's device."""
        xt, _ = self.target.spec.validate(x)
        xt = xt.to(self.target.device, self.pool.dtype)
        gen = generator or torch.Generator(device="cpu").manual_seed(self.seed)
        n, k = xt.shape[0], self.n_overlays
        lo, hi = self.target.spec.bounds_tensors(self.target.device, self.pool.dtype)
        chunk = max(1, self.target.batch_size // k) * 4
        out = []
        for s in range(0, n, chunk):
            xb = xt[s : s + chunk]
            pick = torch.randint(0, self.pool.shape[0], (xb.shape[0], k), generator=gen).to(self.pool.device)
            blends = torch.minimum(torch.maximum(xb[:, None] + self.alpha * (self.pool[pick] - lo), lo), hi)
            scores = self.target.query(blends.reshape(-1, *xb.shape[1:])).float()
            p = scores.softmax(1) if self.target.view_output == "logits" else scores.clamp_min(0)
            h = -(p * p.clamp_min(1e-12).log()).sum(1)
            out.append(h.reshape(xb.shape[0], k).mean(1))
        return torch.cat(out)

    def fit(self, x_clean: Any, frr: float = 0.01) -> STRIP:
        """Set the threshold so that a share ``frr`` of the clean inputs ``x_clean`` is rejected.

        The threshold is the ``frr`` quantile of the clean entropies: at most ``floor(frr * n)`` of the ``n`` clean
        inputs fall strictly below it. That needs ``n >= 1 / frr`` clean inputs (100 at 1%); with fewer, the
        quantile would be the lowest clean entropy (no clean input rejected, the false-rejection rate unmeasured),
        so :class:`~sparring.errors.InputSpecError` is raised instead, naming how many are needed.
        """
        if not 0 < frr < 1:
            raise ParameterError(f"frr (false rejection rate) must be in (0, 1), e.g. 0.01; got {frr!r}.")
        n = self.target.spec.validate(x_clean)[0].shape[0]
        need = math.ceil(1 / frr - 1e-9)
        if n < need:
            raise InputSpecError(
                f"STRIP.fit got {n} clean inputs; a false-rejection rate of {frr:g} needs at least {need} (1/frr), "
                f"else the threshold is just the lowest clean entropy. Give at least {need} clean inputs, or ask for "
                f"frr >= {1 / n:.3g} with these {n}."
            )
        h = self.entropy(x_clean).double().cpu().sort().values
        k = math.floor(frr * h.numel() + 1e-9)  # at most k >= 1 clean inputs fall strictly below the threshold
        self.threshold = float(h[k]) if k < h.numel() else float(h[-1])
        return self

    def detect(self, x: Any) -> Any:
        """True where an input looks trojaned (entropy below the threshold); same kind as ``x``."""
        if self.threshold is None:
            raise ParameterError("STRIP has no threshold yet; call fit(x_clean, frr=0.01) first.")
        flagged = self.entropy(x) < self.threshold
        return flagged.cpu().numpy() if isinstance(x, np.ndarray) else flagged
