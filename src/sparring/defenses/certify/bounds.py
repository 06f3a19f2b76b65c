"""Sound output bounds over an L∞ ball: interval bound propagation (IBP) and CROWN, natively in PyTorch.

Both take a box of inputs ``[lo, hi]`` (the ball ``[x - eps, x + eps]`` cut by the input bounds) and return, per
example, a lower and an upper bound on every output (or on every row of a specification ``C @ logits``, e.g. the
margins ``z_y - z_j``) that no input in the box can cross.

* IBP (Gowal et al. 2018, "On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust
  Models", eq. 6): centre/radius propagation operation by operation; a last linear layer is merged with ``C``
  (their "elision"), which is exact for that layer.
* CROWN (Zhang, Weng, Chen, Hsieh, Daniel 2018, "Efficient Neural Network Robustness Certification with General
  Activation Functions", Thm 3.2): each ReLU is enclosed between two lines chosen from bounds on its input, the
  specification is propagated backwards as a linear function of the input (summed over every path of the graph),
  and that function is minimised over the box in closed form. ReLU input bounds come from CROWN itself on the
  unstable neurons, intersected with IBP (``intermediate="crown"``), or from IBP alone (``intermediate="ibp"``:
  CROWN-IBP, Zhang et al. 2020). The lower line's slope is 1 where ``u > -l`` and 0 otherwise (the adaptive choice
  of the paper).

The network is read from the computation the model really performs (:mod:`sparring.defenses.certify.graph`: a
``torch.fx`` trace, a ``torch.export`` program, or a converted TorchScript module), so reused modules, functional
calls and residual additions are all seen; the supported operations are :data:`SUPPORTED_LAYERS`. After parsing,
the parsed network is run beside the real model on probe inputs and refused (:class:`~sparring.errors.
ModelGraphError`) unless the outputs agree within a tight tolerance: a certificate is only ever issued for the
network that is deployed. A target's normalisation ``(x - mean) / std`` is the first operation. Everything is
batched over examples, stays on the model's device, and is differentiable (certified training back-propagates
through it).

This module is the functional API; the network and both algorithms are :class:`BoundedModel` in :mod:`.bounded`,
exact float32 is :mod:`.precision` (both re-exported here).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from sparring.attacks.evasion._checks import check_eps, check_eps_value
from sparring.attacks.norms import Norm
from sparring.defenses.certify.bounded import (
    ATOL,
    CHUNK_ELEMENTS,
    RTOL,
    BoundedModel,
    Bounds,
    Intermediate,
    Residual,
    margin_spec,
)
from sparring.defenses.certify.graph import SUPPORTED_LAYERS
from sparring.defenses.certify.precision import full_precision
from sparring.errors import AccessError, InputSpecError, ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access
from sparring.targets.torch import TorchTarget

__all__ = ["ATOL", "CHUNK_ELEMENTS", "RTOL", "SUPPORTED_LAYERS", "BoundedModel", "Bounds", "Intermediate", "Residual",
           "crown_bounds", "full_precision", "interval_bounds", "margin_spec"]

Tensor = torch.Tensor



def _setup(model_or_target: nn.Module | TorchTarget, x: Any, eps: float, lower: Any, upper: Any
           ) -> tuple[BoundedModel, Tensor, Tensor]:
    if isinstance(model_or_target, TorchTarget):
        target = model_or_target
        target.require(Access.GRADIENTS, "bound propagation")
        xt, _ = target.spec.validate(x)
        e = check_eps(eps, Norm.LINF, target.spec)
        bm = BoundedModel(target.model, target.spec)
        lo_b, hi_b = target.spec.bounds_tensors(bm.device, bm.dtype)
    elif isinstance(model_or_target, Target):
        raise AccessError(f"bound propagation needs the layers of a TorchTarget; got a {type(model_or_target).__name__}"
                          " (no white-box access).")
    elif isinstance(model_or_target, nn.Module | torch.export.ExportedProgram):
        xt = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
        if xt.ndim < 2 or xt.shape[0] == 0 or not bool(torch.isfinite(xt).all()):
            raise InputSpecError(f"x must be a non-empty finite batch (N, ...); got shape {tuple(xt.shape)}.")
        e = check_eps_value(eps)
        bm = BoundedModel(model_or_target, tuple(xt.shape[1:]))
        lo_b, hi_b = torch.tensor(-math.inf), torch.tensor(math.inf)
    else:
        raise ParameterError(f"bounds need a TorchTarget or a torch.nn.Module; got {type(model_or_target).__name__}.")
    xt = xt.to(bm.device, bm.dtype)
    lo, hi = torch.maximum(xt - e, lo_b.to(xt)), torch.minimum(xt + e, hi_b.to(xt))
    if lower is not None:
        lo = torch.maximum(lo, torch.as_tensor(lower).to(xt))
    if upper is not None:
        hi = torch.minimum(hi, torch.as_tensor(upper).to(xt))
    if bool((lo > hi).any()):
        raise InputSpecError("some inputs lie outside [lower, upper], so their eps-box is empty; clip x to the bounds.")
    gen = torch.Generator().manual_seed(1)
    u = torch.rand(lo[:8].shape, generator=gen).to(lo)
    bm.check(torch.cat([xt[:8], lo[:8] + u * (hi[:8] - lo[:8])]))  # the data and points of the boxes bounded
    return bm, lo, hi


def _like(t: Tensor, ref: Any) -> Any:
    return t.detach().cpu().numpy() if isinstance(ref, np.ndarray) else t


def interval_bounds(model_or_target: nn.Module | TorchTarget, x: Any, eps: float, *, lower: Any = None,
                    upper: Any = None, C: Tensor | None = None) -> tuple[Any, Any]:
    """IBP bounds (Gowal et al. 2018) on the outputs (or on ``C @ outputs``) over ``[x - eps, x + eps]``, cut by the
    target's input bounds and by ``lower``/``upper`` if given. Threat model: white-box, L∞, raw input space.

    Args:
        model_or_target: a :class:`~sparring.targets.TorchTarget` (its normalisation and bounds apply) or a bare
            module (raw inputs, no bounds unless ``lower``/``upper`` are given).
        x: inputs (N, *shape), tensor or numpy. eps: L∞ radius.
        C: optional specification (S, K) or (N, S, K), e.g. :func:`margin_spec`.

    Returns:
        ``(lb, ub)``, (N, K) or (N, S), same kind as ``x``, without autograd history (for differentiable bounds,
        as in certified training, call :class:`BoundedModel` directly).
    """
    bm, lo, hi = _setup(model_or_target, x, eps, lower, upper)
    with torch.no_grad():
        lb, ub = bm.interval(lo, hi, C)
    return _like(lb, x), _like(ub, x)


def crown_bounds(model_or_target: nn.Module | TorchTarget, x: Any, eps: float, *, lower: Any = None,
                 upper: Any = None, C: Tensor | None = None, intermediate: Intermediate = "crown") -> tuple[Any, Any]:
    """CROWN bounds (Zhang et al. 2018) on the outputs (or on ``C @ outputs``); arguments as :func:`interval_bounds`.

    ``intermediate="crown"`` bounds every ReLU input with CROWN as well (tighter, costlier); ``"ibp"`` uses IBP
    there (CROWN-IBP, Zhang et al. 2020).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> x = torch.zeros(4, 2)
        >>> lb, ub = crown_bounds(net, x, 0.1)
        >>> bool((lb <= net(x)).all() and (net(x) <= ub).all())
        True
    """
    bm, lo, hi = _setup(model_or_target, x, eps, lower, upper)
    with torch.no_grad():
        lb, ub = bm.crown(lo, hi, C, intermediate)
    return _like(lb, x), _like(ub, x)
