"""Sound output bounds over an L∞ ball: interval bound propagation (IBP) and CROWN, natively in PyTorch.

Both take a box of inputs ``[lo, hi]`` (the ball ``[x - eps, x + eps]`` cut by the input bounds) and return, per
example, a lower and an upper bound on every output (or on every row of a specification ``C @ logits``, e.g. the
margins ``z_y - z_j``) that no input in the box can cross.

* IBP (Gowal et al. 2018, "On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust
  Models", eq. 6): centre/radius propagation layer by layer; the last linear layer is merged with ``C`` (their
  "elision"), which is exact for that layer.
* CROWN (Zhang, Weng, Chen, Hsieh, Daniel 2018, "Efficient Neural Network Robustness Certification with General
  Activation Functions", Thm 3.2): each ReLU is enclosed between two lines chosen from bounds on its input, the
  specification is propagated backwards as a linear function of the input, and that function is minimised over the
  box in closed form. ReLU input bounds come from CROWN itself on the unstable neurons, intersected with IBP
  (``intermediate="crown"``), or from IBP alone (``intermediate="ibp"``: CROWN-IBP, Zhang et al. 2020). The
  lower line's slope is 1 where ``u > -l`` and 0 otherwise (the adaptive choice of the paper).

Supported models: ``nn.Sequential`` (nested freely) of ``Linear``, ``Conv2d``, ``ReLU``, ``Flatten``,
``BatchNorm1d/2d`` and ``Dropout`` in eval mode, ``AvgPool2d``, ``Identity``, and :class:`Residual` blocks
(``x + block(x)``). A target's normalisation ``(x - mean) / std`` is the first layer. Everything is batched over
examples, stays on the model's device, and is differentiable (certified training back-propagates through it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparring.attacks.evasion._checks import check_eps
from sparring.attacks.norms import Norm
from sparring.errors import AccessError, InputSpecError, ParameterError
from sparring.targets.base import Target
from sparring.targets.spec import Access, InputSpec
from sparring.targets.torch import TorchTarget

__all__ = ["SUPPORTED_LAYERS", "BoundedModel", "Residual", "crown_bounds", "interval_bounds", "margin_spec"]

SUPPORTED_LAYERS = ("Sequential", "Linear", "Conv2d", "ReLU", "Flatten", "BatchNorm1d (eval)", "BatchNorm2d (eval)",
                    "AvgPool2d", "Identity", "Dropout (eval)", "Residual")
Tensor = torch.Tensor
Intermediate = Literal["crown", "ibp"]


class Residual(nn.Module):
    """A residual connection the bounds understand: ``y = x + block(x)`` (``block`` keeps the shape)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)  # type: ignore[no-any-return]


def _tail_sum(t: Tensor) -> Tensor:
    """Sum every axis after (batch, spec): ``(B, S, ...) -> (B, S)``."""
    return t.flatten(2).sum(-1)


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return b if a is None else a if b is None else a + b


class _Op:
    """One layer as a map between per-example shapes: exact forward, interval forward, linear backward."""

    def __init__(self, where: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        self.where, self.in_shape, self.out_shape = where, in_shape, out_shape

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def backward(self, a: Tensor) -> tuple[Tensor, Tensor | None]:
        """``a`` (B, S, *out_shape) on the output -> (coefficients on the input, constant (B, S) or None)."""
        raise NotImplementedError


class _Affine(_Op):
    """Elementwise ``x * scale + shift`` (input normalisation, eval-mode batch norm); parameters read live."""

    def __init__(self, where: str, shape: tuple[int, ...], params: Callable[[], tuple[Tensor, Tensor]]) -> None:
        super().__init__(where, shape, shape)
        self.params = params  # () -> (scale, shift), each broadcastable to `shape`

    def forward(self, x: Tensor) -> Tensor:
        s, t = self.params()
        return x * s + t

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.params()
        c, r = (hi + lo) / 2 * s + t, (hi - lo) / 2 * s.abs()
        return c - r, c + r

    def backward(self, a: Tensor) -> tuple[Tensor, Tensor | None]:
        s, t = self.params()
        return a * s, _tail_sum(a * t)


class _Linear(_Op):
    def __init__(self, where: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...], m: nn.Linear) -> None:
        super().__init__(where, in_shape, out_shape)
        self.m = m

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.m.weight, self.m.bias)

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        c, r = F.linear((hi + lo) / 2, self.m.weight, self.m.bias), F.linear((hi - lo) / 2, self.m.weight.abs())
        return c - r, c + r

    def backward(self, a: Tensor) -> tuple[Tensor, Tensor | None]:
        b = self.m.bias
        return a @ self.m.weight, None if b is None else _tail_sum(a * b)


class _Conv(_Op):
    def __init__(self, where: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...], m: nn.Conv2d,
                 padding: tuple[int, int]) -> None:
        super().__init__(where, in_shape, out_shape)
        self.m, self.padding = m, padding
        st, dl, k = m.stride, m.dilation, m.kernel_size
        self.out_pad = tuple(in_shape[1 + i] - ((out_shape[1 + i] - 1) * st[i] - 2 * padding[i]
                                                  + dl[i] * (k[i] - 1) + 1) for i in range(2))

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        m = self.m
        return F.conv2d(x, w, b, m.stride, self.padding, m.dilation, m.groups)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv(x, self.m.weight, self.m.bias)

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        w = self.m.weight
        c, r = self._conv((hi + lo) / 2, w, self.m.bias), self._conv((hi - lo) / 2, w.abs(), None)
        return c - r, c + r

    def backward(self, a: Tensor) -> tuple[Tensor, Tensor | None]:
        m, n, s = self.m, a.shape[0], a.shape[1]
        back = F.conv_transpose2d(a.reshape(n * s, *self.out_shape), m.weight, None, m.stride, self.padding,
                                  self.out_pad, m.groups, m.dilation)
        b = m.bias
        return back.reshape(n, s, *self.in_shape), None if b is None else a.sum((-2, -1)) @ b


class _Pool(_Op):
    """``AvgPool2d``: a positive linear map, transposed with ``torch.func.vjp`` (any padding/ceil/divisor)."""

    def __init__(self, where: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...], m: nn.Module) -> None:
        super().__init__(where, in_shape, out_shape)
        self.m = m

    def forward(self, x: Tensor) -> Tensor:
        return self.m(x)  # type: ignore[no-any-return]

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        return self.m(lo), self.m(hi)

    def backward(self, a: Tensor) -> tuple[Tensor, Tensor | None]:
        n, s = a.shape[:2]
        vjp = torch.func.vjp(self.m, a.new_zeros(n * s, *self.in_shape))[1]
        (back,) = vjp(a.reshape(n * s, *self.out_shape))
        return back.reshape(n, s, *self.in_shape), None


class _Reshape(_Op):
    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.out_shape)

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward(lo), self.forward(hi)

    def backward(self, a: Tensor) -> tuple[Tensor, Tensor | None]:
        return a.reshape(*a.shape[:2], *self.in_shape), None


class _ReLU(_Op):
    relax: tuple[Tensor, Tensor, Tensor] | None = None  # (lower slope, upper slope, upper intercept), (B, *shape)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        return F.relu(lo), F.relu(hi)

    def set_bounds(self, lo: Tensor, hi: Tensor) -> None:
        """The CROWN relaxation from pre-activation bounds: upper line through (l, 0) and (u, u) where unstable;
        lower slope 1 if ``u > -l`` else 0; exact where the neuron is stably on or off."""
        up = hi.clamp(min=0)
        slope_u = up / (up - lo.clamp(max=0)).clamp(min=1e-12)
        icpt_u = -lo.clamp(max=0) * slope_u
        slope_l = ((hi > 0) & ((lo >= 0) | (hi > -lo))).to(lo.dtype)
        self.relax = (slope_l, slope_u, icpt_u)

    def backward(self, a: Tensor) -> tuple[Tensor, Tensor | None]:
        assert self.relax is not None, "ReLU relaxation used before its bounds were computed"
        slope_l, slope_u, icpt_u = (t.unsqueeze(1) for t in self.relax)
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        return pos * slope_l + neg * slope_u, _tail_sum(neg * icpt_u)


Path = tuple[int, ...]


class _Residual(_Op):
    def __init__(self, where: str, shape: tuple[int, ...], children: list[_Op]) -> None:
        super().__init__(where, shape, shape)
        self.children = children

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for op in self.children:
            y = op.forward(y)
        return x + y

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:  # pure IBP (no relaxations set)
        flo, fhi = _walk(self.children, (), lo, hi, None)
        return lo + flo, hi + fhi

    def backward(self, a: Tensor) -> tuple[Tensor, Tensor | None]:
        af, bias = _back_chain(self.children, a)
        return a + af, bias


Hook = Callable[[Path, "_ReLU", Tensor, Tensor], tuple[Tensor, Tensor]]


def _walk(ops: list[_Op], prefix: Path, lo: Tensor, hi: Tensor, hook: Hook | None) -> tuple[Tensor, Tensor]:
    """IBP through ``ops``; ``hook`` sees (and may tighten) the input bounds of every ReLU, by position."""
    for i, op in enumerate(ops):
        if isinstance(op, _Residual) and hook is not None:
            flo, fhi = _walk(op.children, (*prefix, i), lo, hi, hook)
            lo, hi = lo + flo, hi + fhi
            continue
        if isinstance(op, _ReLU) and hook is not None:
            lo, hi = hook((*prefix, i), op, lo, hi)
        lo, hi = op.interval(lo, hi)
    return lo, hi


def _back_chain(ops: list[_Op], a: Tensor) -> tuple[Tensor, Tensor | None]:
    bias: Tensor | None = None
    for op in reversed(ops):
        a, b = op.backward(a)
        bias = _add(bias, b)
    return a, bias


def _back_from(ops: list[_Op], path: Path, a: Tensor) -> tuple[Tensor, Tensor | None]:
    """Back-substitute ``a``, given on the input of the layer at ``path``, down to the model's input."""
    i, bias = path[0], None
    if len(path) > 1:
        child = ops[i]
        assert isinstance(child, _Residual)
        a, bias = _back_from(child.children, path[1:], a)
    a, b = _back_chain(ops[:i], a)
    return a, _add(bias, b)


def _mixing_before(ops: list[_Op], path: Path) -> int:
    """How many non-elementwise layers precede ``path`` (a ReLU counts 2): with at most one, IBP is exact."""
    n = sum(2 if isinstance(op, _ReLU) else 0 if isinstance(op, _Affine | _Reshape) else 1 for op in ops[: path[0]])
    if len(path) > 1:
        child = ops[path[0]]
        assert isinstance(child, _Residual)
        n += _mixing_before(child.children, path[1:])  # inside the block only its input x matters
    return n


def _concretize(a: Tensor, bias: Tensor | None, lo: Tensor, hi: Tensor) -> Tensor:
    """Minimum of ``a·x + bias`` over the box: ``a·centre - |a|·radius + bias``, shape (B, S)."""
    af = a.flatten(2)
    c, r = ((hi + lo) / 2).flatten(1).unsqueeze(-1), ((hi - lo) / 2).flatten(1).unsqueeze(-1)
    val = (torch.bmm(af, c) - torch.bmm(af.abs(), r)).squeeze(-1)
    return val if bias is None else val + bias


class BoundedModel:
    """A supported model parsed once for bound propagation; parameters are read live, so it follows training.

    Args:
        model: an ``nn.Sequential`` (or a single layer) of the supported layers (:data:`SUPPORTED_LAYERS`), in eval
            mode where that matters (batch norm, dropout).
        spec: the :class:`~sparring.targets.InputSpec` (its shape, and its ``mean``/``std`` as the first layer), or
            just the shape of one input.

    Raises:
        ParameterError: a layer is not supported (naming its type and position) or in training mode.
    """

    def __init__(self, model: nn.Module, spec: InputSpec | tuple[int, ...]) -> None:
        p = next(iter(model.parameters()), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self.dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        shape = spec.shape if isinstance(spec, InputSpec) else tuple(int(s) for s in spec)
        self.in_shape = shape
        self.ops: list[_Op] = []
        norm = spec.norm_tensors(self.device, self.dtype) if isinstance(spec, InputSpec) else None
        if norm is not None:
            scale, shift = 1.0 / norm[1][0], -norm[0][0] / norm[1][0]
            self.ops.append(_Affine("normalisation", shape, lambda: (scale, shift)))
        self.out_shape = _parse(model, shape, "", self.ops, self)

    def forward(self, x: Tensor) -> Tensor:
        """The model's exact output (normalisation included)."""
        for op in self.ops:
            x = op.forward(x)
        return x

    def _spec(self, c: Tensor | None, n: int) -> Tensor | None:
        if c is None:
            return None
        c = torch.as_tensor(c).to(self.device, self.dtype)
        k = self.out_shape
        if len(k) != 1 or c.ndim not in (2, 3) or c.shape[-1] != k[0] or (c.ndim == 3 and c.shape[0] != n):
            raise ParameterError(
                f"the specification C must have shape (S, {k[-1]}) or (N={n}, S, {k[-1]}) for a model with outputs "
                f"of shape {k}; got {tuple(c.shape)}.")
        return c.expand(n, *c.shape[-2:]) if c.ndim == 2 else c

    def interval(self, lo: Tensor, hi: Tensor, C: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """IBP bounds over the box ``[lo, hi]`` (B, *in_shape): of the outputs, or of ``C @ outputs`` (B, S)."""
        c = self._spec(C, lo.shape[0])
        last = self.ops[-1] if self.ops else None
        if c is not None and isinstance(last, _Linear) and len(last.in_shape) == 1:
            lo, hi = _walk(self.ops[:-1], (), lo, hi, None)  # elision: C·W is one exact linear layer
            w, b = c @ last.m.weight, None if last.m.bias is None else c @ last.m.bias
        else:
            lo, hi = _walk(self.ops, (), lo, hi, None)
            if c is None:
                return lo, hi
            w, b = c, None
        mid, rad = ((hi + lo) / 2).unsqueeze(-1), ((hi - lo) / 2).unsqueeze(-1)
        cen, r = torch.bmm(w, mid).squeeze(-1), torch.bmm(w.abs(), rad).squeeze(-1)
        cen = cen if b is None else cen + b
        return cen - r, cen + r

    def _identity(self, n: int) -> Tensor:
        k = math.prod(self.out_shape)
        eye = torch.eye(k, device=self.device, dtype=self.dtype)
        return eye.reshape(k, *self.out_shape).expand(n, k, *self.out_shape)

    def relu_bounds(self, lo: Tensor, hi: Tensor, intermediate: Intermediate = "crown"
                    ) -> dict[str, tuple[Tensor, Tensor]]:
        """Bounds on the input of every ReLU over the box, keyed by its position (as in ``named_modules()``), in
        forward order; also sets the ReLU relaxations that the CROWN backward pass uses."""
        if intermediate not in ("crown", "ibp"):
            raise ParameterError(f"intermediate must be 'crown' or 'ibp'; got {intermediate!r}.")
        found: dict[str, tuple[Tensor, Tensor]] = {}

        def hook(path: Path, op: _ReLU, lb: Tensor, ub: Tensor) -> tuple[Tensor, Tensor]:
            if intermediate == "crown" and _mixing_before(self.ops, path) > 1:  # else IBP is already exact
                lb, ub = self._tighten(path, lb, ub, lo, hi)
            op.set_bounds(lb, ub)
            found[op.where] = (lb, ub)
            return lb, ub

        _walk(self.ops, (), lo, hi, hook)
        return found

    def _lower(self, lo: Tensor, hi: Tensor, a0: Tensor, intermediate: Intermediate) -> Tensor:
        self.relu_bounds(lo, hi, intermediate)
        a, bias = _back_chain(self.ops, a0)
        return _concretize(a, bias, lo, hi)

    def crown_lower(self, lo: Tensor, hi: Tensor, C: Tensor | None = None,
                    intermediate: Intermediate = "crown") -> Tensor:
        """CROWN lower bound of ``C @ outputs`` over the box ``[lo, hi]`` (default ``C``: identity): (B, S)."""
        c = self._spec(C, lo.shape[0])
        return self._lower(lo, hi, self._identity(lo.shape[0]) if c is None else c, intermediate)

    def crown(self, lo: Tensor, hi: Tensor, C: Tensor | None = None,
              intermediate: Intermediate = "crown") -> tuple[Tensor, Tensor]:
        """CROWN lower and upper bounds, of the outputs (their shape) or of ``C @ outputs`` (B, S). The upper bound
        of ``C·f`` is minus the lower bound of ``-C·f``: both come from one backward pass."""
        n = lo.shape[0]
        c = self._spec(C, n)
        a0 = self._identity(n) if c is None else c
        both = self._lower(lo, hi, torch.cat([a0, -a0], dim=1), intermediate)
        s = a0.shape[1]
        lb, ub = both[:, :s], -both[:, s:]
        if c is None:
            lb, ub = lb.reshape(n, *self.out_shape), ub.reshape(n, *self.out_shape)
        return lb, ub

    def _tighten(self, path: Path, lo: Tensor, hi: Tensor, box_lo: Tensor, box_hi: Tensor) -> tuple[Tensor, Tensor]:
        """CROWN bounds on the ReLU input at ``path`` for the neurons IBP leaves unstable, intersected with IBP."""
        n, shape = lo.shape[0], lo.shape[1:]
        flo, fhi = lo.reshape(n, -1), hi.reshape(n, -1)
        idx = ((flo < 0) & (fhi > 0)).any(0).nonzero().squeeze(1)
        k = idx.numel()
        if k == 0:
            return lo, hi
        e = torch.zeros(k, flo.shape[1], device=lo.device, dtype=lo.dtype)
        e[torch.arange(k, device=lo.device), idx] = 1.0
        a0 = torch.cat([e, -e]).reshape(2 * k, *shape).expand(n, 2 * k, *shape)
        a, bias = _back_from(self.ops, path, a0)
        bnd = _concretize(a, bias, box_lo, box_hi)
        new_lo = torch.maximum(flo[:, idx], bnd[:, :k])
        new_hi = torch.minimum(fhi[:, idx], -bnd[:, k:])
        return flo.index_copy(1, idx, new_lo).reshape(lo.shape), fhi.index_copy(1, idx, new_hi).reshape(hi.shape)


def _unsupported(m: nn.Module, where: str, why: str = "") -> ParameterError:
    pos = f"at position {where!r} (as in model.named_modules())" if where else "(the model itself)"
    return ParameterError(
        f"bound propagation does not support {type(m).__name__} {pos}{why}. Supported layers: "
        f"{', '.join(SUPPORTED_LAYERS)}. Replace it with a supported equivalent (e.g. AvgPool2d or a strided Conv2d "
        "for MaxPool2d) or call model.eval() for layers that differ in training mode.")


def _parse(m: nn.Module, shape: tuple[int, ...], where: str, ops: list[_Op], owner: BoundedModel) -> tuple[int, ...]:
    kind = type(m)
    if kind is nn.Sequential:
        for name, child in m.named_children():
            shape = _parse(child, shape, f"{where}.{name}" if where else name, ops, owner)
        return shape
    if kind is Residual:
        assert isinstance(m, Residual)
        children: list[_Op] = []
        out = _parse(m.block, shape, f"{where}.block" if where else "block", children, owner)
        if out != shape:
            raise ParameterError(f"the Residual block at position {where!r} maps shape {shape} to {out}; a residual "
                                 "block must keep the shape (y = x + block(x)).")
        ops.append(_Residual(where, shape, children))
        return shape
    if kind is nn.Identity or (kind is nn.Dropout and not m.training):
        return shape
    if kind in (nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d) and m.training:
        raise _unsupported(m, where, " in training mode (it is random or uses batch statistics)")
    if kind not in (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d):
        raise _unsupported(m, where)
    try:
        with torch.no_grad():
            out = m(torch.zeros(2, *shape, device=owner.device, dtype=owner.dtype))
    except RuntimeError as exc:
        raise ParameterError(f"{kind.__name__} at position {where!r} fails on inputs of shape {shape}: {exc}") from exc
    if not isinstance(out, Tensor) or out.ndim < 2 or out.shape[0] != 2:
        raise _unsupported(m, where, " with these settings (it mixes the batch axis)")
    out_shape = tuple(out.shape[1:])
    if isinstance(m, nn.Linear):
        ops.append(_Linear(where, shape, out_shape, m))
    elif isinstance(m, nn.Conv2d):
        ops.append(_Conv(where, shape, out_shape, m, _conv_padding(m, where)))
    elif isinstance(m, nn.ReLU):
        ops.append(_ReLU(where, shape, out_shape))
    elif isinstance(m, nn.Flatten):
        ops.append(_Reshape(where, shape, out_shape))
    elif isinstance(m, nn.AvgPool2d):
        ops.append(_Pool(where, shape, out_shape, m))
    else:
        assert isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)
        if m.running_mean is None or m.running_var is None:
            raise _unsupported(m, where, " without running statistics (track_running_stats=False)")
        ops.append(_Affine(where, shape, _bn_params(m, len(shape))))
    return out_shape


def _bn_params(m: nn.BatchNorm1d | nn.BatchNorm2d, ndim: int) -> Callable[[], tuple[Tensor, Tensor]]:
    view = (-1,) + (1,) * (ndim - 1)

    def params() -> tuple[Tensor, Tensor]:
        assert m.running_mean is not None and m.running_var is not None
        scale = torch.rsqrt(m.running_var + m.eps)
        if m.weight is not None:
            scale = scale * m.weight
        shift = -m.running_mean * scale
        if m.bias is not None:
            shift = shift + m.bias
        return scale.reshape(view), shift.reshape(view)

    return params


def _conv_padding(m: nn.Conv2d, where: str) -> tuple[int, int]:
    if m.padding_mode != "zeros":
        raise _unsupported(m, where, f" with padding_mode={m.padding_mode!r} (only 'zeros')")
    if m.padding == "valid":
        return (0, 0)
    if isinstance(m.padding, str):  # "same": symmetric only
        total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size, strict=True)]
        if any(t % 2 for t in total):
            raise _unsupported(m, where, " with asymmetric padding='same' (even kernel); pad explicitly")
        return (total[0] // 2, total[1] // 2)
    return (int(m.padding[0]), int(m.padding[1]))


def margin_spec(y: Tensor, n_classes: int) -> Tensor:
    """The specification of margins: ``C[i, j] = e_{y_i} - e_j`` (N, K, K), so ``(C @ z)[i, j] = z_{y_i} - z_j``
    (zero in row ``j = y_i``). A positive lower bound on every other row certifies example ``i``."""
    eye = torch.eye(n_classes, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


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
    elif isinstance(model_or_target, nn.Module):
        xt = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
        if xt.ndim < 2 or xt.shape[0] == 0 or not bool(torch.isfinite(xt).all()):
            raise InputSpecError(f"x must be a non-empty finite batch (N, ...); got shape {tuple(xt.shape)}.")
        try:
            e = float(eps)
        except (TypeError, ValueError):
            raise ParameterError(f"eps must be a number; got {eps!r}.") from None
        if not math.isfinite(e) or e < 0:
            raise ParameterError(f"eps must be a finite number >= 0; got {eps!r}.")
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
