"""The bounded network: :class:`BoundedModel` parses a model into operations (:mod:`.graph`), checks the parse
against the real model on probe inputs, and computes interval bounds (IBP; Gowal et al. 2018, eq. 6) and CROWN
bounds (Zhang, Weng, Chen, Hsieh & Daniel 2018, Thm 3.2; CROWN-IBP, Zhang et al. 2020) over a box of inputs, with
:func:`margin_spec` for the margins ``z_y - z_j``. The functional API over targets and modules (and the longer
description of both algorithms) is :mod:`.bounds`, which re-exports everything here.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from sparring.defenses.certify import ops as O
from sparring.defenses.certify.graph import parse
from sparring.defenses.certify.precision import exact
from sparring.defenses.certify.trace import first_line
from sparring.errors import ModelGraphError, ParameterError
from sparring.targets.spec import InputSpec

__all__ = ["ATOL", "CHUNK_ELEMENTS", "RTOL", "BoundedModel", "Bounds", "Intermediate", "Residual", "margin_spec"]

Tensor = torch.Tensor


Intermediate = Literal["crown", "ibp"]
Bounds = tuple[Tensor, Tensor]
#: probe outputs must agree within ``ATOL + RTOL * max |output|``; float32 rounding is ~1e-6 of it
ATOL, RTOL = 1e-5, 1e-4
#: the most coefficients one CROWN back-substitution for intermediate bounds holds per op (2**25: 128 MiB float32)
CHUNK_ELEMENTS = 2**25


class Residual(nn.Module):
    """A residual connection: ``y = x + block(x)`` (``block`` keeps the shape). Any ``forward`` that adds its
    branches is bounded the same way; this class is kept for models written against earlier versions."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)  # type: ignore[no-any-return]


def _concretize(a: Tensor, bias: Tensor | None, lo: Tensor, hi: Tensor) -> Tensor:
    """Minimum of ``a·x + bias`` over the box: ``a·centre - |a|·radius + bias``, shape (B, S)."""
    af = a.flatten(2)
    c, r = ((hi + lo) / 2).flatten(1).unsqueeze(-1), ((hi - lo) / 2).flatten(1).unsqueeze(-1)
    val = (torch.bmm(af, c) - torch.bmm(af.abs(), r)).squeeze(-1)
    return val if bias is None else val + bias


def _module_of(model: Any) -> Any:
    return model.module() if isinstance(model, torch.export.ExportedProgram) else model


class BoundedModel:
    """A model parsed once for bound propagation; parameters are read live, so it follows training.

    Args:
        model: an ``nn.Module`` whose ``forward`` uses the supported operations (:data:`SUPPORTED_LAYERS`) in any
            arrangement (reused modules and blocks, functional calls, residual additions), in eval mode where that
            matters (batch norm, dropout); or a ``torch.export`` program, or a TorchScript module.
        spec: the :class:`~sparring.targets.InputSpec` (its shape, its bounds for the probe inputs, and its
            ``mean``/``std`` as the first operation), or just the shape of one input.
        probe: optional raw inputs (N, *shape), e.g. data points, checked on top of random points in the bounds.

    Attributes:
        max_abs_diff: the largest difference between the parsed network's outputs and the model's over every probe
            input checked so far (:meth:`check`). n_probes: how many inputs that covers.

    Raises:
        ModelGraphError: an operation is not supported (naming it and its position in the graph), the model
            cannot be traced, or the parsed network's outputs differ from the model's on the probe inputs.
    """

    def __init__(self, model: nn.Module | Any, spec: InputSpec | tuple[int, ...], *, probe: Tensor | None = None
                 ) -> None:
        model = _module_of(model)
        p = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
        self.device = p.device if p is not None else torch.device("cpu")
        self.dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        shape = spec.shape if isinstance(spec, InputSpec) else tuple(int(s) for s in spec)
        self.in_shape = shape
        self.ops: list[O.Op] = []
        norm = spec.norm_tensors(self.device, self.dtype) if isinstance(spec, InputSpec) else None
        if norm is not None:
            scale, shift = 1.0 / norm[1][0], -norm[0][0] / norm[1][0]
            self.ops.append(O.Affine("normalisation", (0,), shape, lambda: (scale, shift)))
        self._n_pre = len(self.ops)
        points = self._random_points(spec, 8)
        self.out, self._call = parse(model, self.ops, self._n_pre, self._normalise(points[:2]))
        self.depth = [0]
        for op in self.ops:
            self.depth.append(max(self.depth[a] for a in op.args) + op.mixing)
        with torch.no_grad():
            self.out_shape = tuple(self.forward(points[:2]).shape[1:])
        self.max_abs_diff, self.n_probes = 0.0, 0
        self.check(points[2:])
        if probe is not None:
            self.check(torch.as_tensor(probe).to(self.device, self.dtype))

    def _random_points(self, spec: InputSpec | tuple[int, ...], n: int) -> Tensor:
        gen = torch.Generator().manual_seed(0)
        u = torch.rand(n, *self.in_shape, generator=gen, dtype=torch.float64)
        if isinstance(spec, InputSpec):
            lo, hi = (t.to(torch.float64) for t in spec.bounds_tensors(torch.device("cpu"), torch.float64))
            if bool(torch.isfinite(lo).all() and torch.isfinite(hi).all()):
                return (lo + u * (hi - lo)).to(self.device, self.dtype)
        return torch.randn(n, *self.in_shape, generator=gen).to(self.device, self.dtype)

    def _normalise(self, x: Tensor) -> Tensor:
        for op in self.ops[: self._n_pre]:
            x = op.forward(x)
        return x

    @exact
    def check(self, x: Tensor) -> float:
        """Run the parsed network and the real model on raw inputs ``x``; refuse unless they agree within
        ``ATOL + RTOL * max |output|``. Returns (and records in :attr:`max_abs_diff`) the largest difference."""
        if x.shape[0] == 0:
            return self.max_abs_diff
        with torch.no_grad():
            ours = self.forward(x)
            try:  # a copy: an in-place op in the model's forward must not touch the caller's data
                ref = self._call(self._normalise(x).clone())
            except Exception as exc:
                raise ModelGraphError(
                    f"the model fails on {x.shape[0]} probe inputs of shape {tuple(x.shape[1:])}: {first_line(exc)}. "
                    "A torch.export program exported with a fixed batch size rejects other sizes: export it with "
                    "dynamic_shapes=({0: torch.export.Dim('batch')},).") from exc
        if not isinstance(ref, Tensor) or ref.shape != ours.shape:
            got = tuple(ref.shape) if isinstance(ref, Tensor) else type(ref).__name__
            raise ModelGraphError(f"the network read from the model gives outputs of shape {tuple(ours.shape)}, "
                                  f"the model {got}: bound propagation cannot follow this model.")
        diff = float((ours - ref).abs().max())
        tol = ATOL + RTOL * float(ref.abs().max())
        if not diff <= tol:  # also refuses NaN
            raise ModelGraphError(
                f"the network read from the model does not reproduce it: on {x.shape[0]} probe inputs their outputs "
                f"differ by up to {diff:.3g} (tolerance {tol:.2g}), so its certificates would be for another "
                "network. Something in forward is not what the graph shows (in-place updates of a tensor used "
                "again, state kept between calls, randomness); write forward without it, or bound a "
                "torch.export program of the model.")
        self.max_abs_diff, self.n_probes = max(self.max_abs_diff, diff), self.n_probes + int(x.shape[0])
        return diff

    def forward(self, x: Tensor) -> Tensor:
        """The parsed network's output (normalisation included)."""
        vals = [x]
        for op in self.ops:
            vals.append(op.forward(*(vals[a] for a in op.args)))
        return vals[self.out]

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

    def _walk(self, lo: Tensor, hi: Tensor, stop: int, hook: Any = None) -> list[Bounds]:
        """IBP bounds of the values ``0..stop``; ``hook(value, relu, bounds)`` may tighten every ReLU's input."""
        vals: list[Bounds] = [(lo, hi)]
        for op in self.ops[:stop]:
            if isinstance(op, O.ReLU) and hook is not None:
                vals[op.args[0]] = hook(op.args[0], op, vals[op.args[0]])
            vals.append(op.interval(*(vals[a] for a in op.args)))
        return vals

    @exact
    def interval(self, lo: Tensor, hi: Tensor, C: Tensor | None = None) -> Bounds:
        """IBP bounds over the box ``[lo, hi]`` (B, *in_shape): of the outputs, or of ``C @ outputs`` (B, S)."""
        c = self._spec(C, lo.shape[0])
        last = self.ops[self.out - 1] if self.out > 0 else None
        if c is not None and isinstance(last, O.Linear) and len(last.in_shape) == 1:
            lo, hi = self._walk(lo, hi, self.out - 1)[last.args[0]]  # elision: C·W is one exact linear layer
            w, b = c @ last.weight(), last.bias()
            b = None if b is None else c @ b
        else:
            lo, hi = self._walk(lo, hi, self.out)[self.out]
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

    def _back(self, start: int, a0: Tensor) -> tuple[Tensor, Tensor | None]:
        """Back-substitute ``a0``, given on value ``start``, through every path of the graph down to the input."""
        coeff: dict[int, Tensor] = {start: a0}
        bias: Tensor | None = None
        for k in range(start - 1, -1, -1):  # op k produces value k + 1; its consumers come later
            a = coeff.pop(k + 1, None)
            if a is None:
                continue
            op = self.ops[k]
            parts, b = op.backward(a)
            bias = O.add(bias, b)
            for i, part in zip(op.args, parts, strict=True):
                coeff[i] = part if i not in coeff else coeff[i] + part
        return coeff[0] if 0 in coeff else a0.new_zeros(*a0.shape[:2], *self.in_shape), bias

    @exact
    def relu_bounds(self, lo: Tensor, hi: Tensor, intermediate: Intermediate = "crown") -> dict[str, Bounds]:
        """Bounds on the input of every ReLU over the box, in execution order, keyed by where it is called: the
        module's name in ``named_modules()`` (``name#k`` for its k-th call when one module is reused) or the graph
        node's name for functional calls; also sets the ReLU relaxations that the CROWN backward pass uses."""
        if intermediate not in ("crown", "ibp"):
            raise ParameterError(f"intermediate must be 'crown' or 'ibp'; got {intermediate!r}.")
        found: dict[str, Bounds] = {}

        def hook(v: int, op: O.ReLU, b: Bounds) -> Bounds:
            if intermediate == "crown" and self.depth[v] > 1:  # else IBP is already exact
                b = self._tighten(v, b[0], b[1], lo, hi)
            op.set_bounds(*b)
            found[op.where] = b
            return b

        self._walk(lo, hi, self.out, hook)
        return found

    def _lower(self, lo: Tensor, hi: Tensor, a0: Tensor, intermediate: Intermediate) -> Tensor:
        self.relu_bounds(lo, hi, intermediate)
        a, bias = self._back(self.out, a0)
        return _concretize(a, bias, lo, hi)

    @exact
    def crown_lower(self, lo: Tensor, hi: Tensor, C: Tensor | None = None,
                    intermediate: Intermediate = "crown") -> Tensor:
        """CROWN lower bound of ``C @ outputs`` over the box ``[lo, hi]`` (default ``C``: identity): (B, S)."""
        c = self._spec(C, lo.shape[0])
        return self._lower(lo, hi, self._identity(lo.shape[0]) if c is None else c, intermediate)

    @exact
    def crown(self, lo: Tensor, hi: Tensor, C: Tensor | None = None,
              intermediate: Intermediate = "crown") -> Bounds:
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

    def _tighten(self, v: int, lo: Tensor, hi: Tensor, box_lo: Tensor, box_hi: Tensor) -> Bounds:
        """CROWN bounds on value ``v`` (a ReLU input) for the neurons IBP leaves unstable, intersected with IBP."""
        n, shape = lo.shape[0], lo.shape[1:]
        flo, fhi = lo.reshape(n, -1), hi.reshape(n, -1)
        idx = ((flo < 0) & (fhi > 0)).any(0).nonzero().squeeze(1)
        k = idx.numel()
        if k == 0:
            return lo, hi
        # each backward row holds (n, rows, value) coefficients at every op it passes: a chunk of the unstable
        # neurons at a time keeps that under CHUNK_ELEMENTS, so a large conv layer is slow rather than out of memory
        widest = max([math.prod(op.in_shape) for op in self.ops[:v]] + [flo.shape[1]])
        step = max(1, CHUNK_ELEMENTS // (2 * n * widest))
        lows, highs = [], []
        for part in torch.split(idx, step):
            c = part.numel()
            e = torch.zeros(c, flo.shape[1], device=lo.device, dtype=lo.dtype)
            e[torch.arange(c, device=lo.device), part] = 1.0
            a0 = torch.cat([e, -e]).reshape(2 * c, *shape).expand(n, 2 * c, *shape)
            a, bias = self._back(v, a0)
            bnd = _concretize(a, bias, box_lo, box_hi)
            lows.append(bnd[:, :c])
            highs.append(-bnd[:, c:])
        new_lo = torch.maximum(flo[:, idx], torch.cat(lows, 1))
        new_hi = torch.minimum(fhi[:, idx], torch.cat(highs, 1))
        return flo.index_copy(1, idx, new_lo).reshape(lo.shape), fhi.index_copy(1, idx, new_hi).reshape(hi.shape)


def margin_spec(y: Tensor, n_classes: int) -> Tensor:
    """The specification of margins: ``C[i, j] = e_{y_i} - e_j`` (N, K, K), so ``(C @ z)[i, j] = z_{y_i} - z_j``
    (zero in row ``j = y_i``). A positive lower bound on every other row certifies example ``i``."""
    eye = torch.eye(n_classes, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)
