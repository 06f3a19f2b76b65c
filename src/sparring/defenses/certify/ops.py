"""The operations bound propagation understands, each as exact forward, interval forward and linear backward.

An op reads its inputs from earlier values of the network (``args``: indices, 0 being the network's input) and
works per example: shapes exclude the batch axis. Parameters are read live through callables, so a parsed network
follows training. The relaxations are those of IBP (Gowal et al. 2018) and CROWN (Zhang et al. 2018); see
:mod:`sparring.defenses.certify.bounds`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Get = Callable[[], Tensor | None]
Backward = tuple[list[Tensor], Tensor | None]


def tail_sum(t: Tensor) -> Tensor:
    """Sum every axis after (batch, spec): ``(B, S, ...) -> (B, S)``."""
    return t.flatten(2).sum(-1)


def add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return b if a is None else a if b is None else a + b


class Op:
    """One operation of the network as a map between per-example shapes."""

    #: how much an op mixes its input: 0 elementwise affine/reshape, 1 linear, 2 ReLU (see ``BoundedModel``)
    mixing = 1

    def __init__(self, where: str, args: Sequence[int], in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        self.where, self.args, self.in_shape, self.out_shape = where, tuple(args), in_shape, out_shape

    def forward(self, *xs: Tensor) -> Tensor:
        raise NotImplementedError

    def interval(self, *bounds: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def backward(self, a: Tensor) -> Backward:
        """``a`` (B, S, *out_shape) on the output -> (coefficients on each input, constant (B, S) or None)."""
        raise NotImplementedError


class Affine(Op):
    """Elementwise ``x * scale + shift`` (normalisation, eval-mode batch norm, arithmetic with constants)."""

    mixing = 0

    def __init__(self, where: str, args: Sequence[int], shape: tuple[int, ...],
                 params: Callable[[], tuple[Tensor, Tensor]]) -> None:
        super().__init__(where, args, shape, shape)
        self.params = params  # () -> (scale, shift), each broadcastable to `shape`

    def forward(self, *xs: Tensor) -> Tensor:
        s, t = self.params()
        return xs[0] * s + t

    def interval(self, *bounds: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        (lo, hi), (s, t) = bounds[0], self.params()
        c, r = (hi + lo) / 2 * s + t, (hi - lo) / 2 * s.abs()
        return c - r, c + r

    def backward(self, a: Tensor) -> Backward:
        s, t = self.params()
        return [a * s], tail_sum(a * t)


class Linear(Op):
    """``x @ W.T + b`` on the last axis (``nn.Linear``, ``F.linear``, ``x @ W``)."""

    def __init__(self, where: str, args: Sequence[int], in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 weight: Callable[[], Tensor], bias: Get) -> None:
        super().__init__(where, args, in_shape, out_shape)
        self.weight, self.bias = weight, bias

    def forward(self, *xs: Tensor) -> Tensor:
        return F.linear(xs[0], self.weight(), self.bias())

    def interval(self, *bounds: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        (lo, hi), w = bounds[0], self.weight()
        c, r = F.linear((hi + lo) / 2, w, self.bias()), F.linear((hi - lo) / 2, w.abs())
        return c - r, c + r

    def backward(self, a: Tensor) -> Backward:
        b = self.bias()
        return [a @ self.weight()], None if b is None else tail_sum(a * b)


class Conv(Op):
    """2-D convolution with zero padding (any stride, dilation, groups); CROWN transposes it."""

    def __init__(self, where: str, args: Sequence[int], in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 weight: Callable[[], Tensor], bias: Get, stride: tuple[int, int], padding: tuple[int, int],
                 dilation: tuple[int, int], groups: int) -> None:
        super().__init__(where, args, in_shape, out_shape)
        self.weight, self.bias = weight, bias
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        k = self.weight().shape[2:]
        self.out_pad = tuple(in_shape[1 + i] - ((out_shape[1 + i] - 1) * stride[i] - 2 * padding[i]
                                                  + dilation[i] * (k[i] - 1) + 1) for i in range(2))

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, *xs: Tensor) -> Tensor:
        return self._conv(xs[0], self.weight(), self.bias())

    def interval(self, *bounds: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        (lo, hi), w = bounds[0], self.weight()
        c, r = self._conv((hi + lo) / 2, w, self.bias()), self._conv((hi - lo) / 2, w.abs(), None)
        return c - r, c + r

    def backward(self, a: Tensor) -> Backward:
        n, s = a.shape[0], a.shape[1]
        back = F.conv_transpose2d(a.reshape(n * s, *self.out_shape), self.weight(), None, self.stride, self.padding,
                                  self.out_pad, self.groups, self.dilation)
        b = self.bias()
        return [back.reshape(n, s, *self.in_shape)], None if b is None else a.sum((-2, -1)) @ b


class PositiveLinear(Op):
    """A linear map with non-negative coefficients that keeps examples apart (average pooling, a mean or sum over
    non-batch axes): the interval maps to ``[f(lo), f(hi)]``; the backward pass is its transpose (``vjp``)."""

    def __init__(self, where: str, args: Sequence[int], in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__(where, args, in_shape, out_shape)
        self.fn = fn

    def forward(self, *xs: Tensor) -> Tensor:
        return self.fn(xs[0])

    def interval(self, *bounds: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return self.fn(bounds[0][0]), self.fn(bounds[0][1])

    def backward(self, a: Tensor) -> Backward:
        n, s = a.shape[:2]
        vjp = torch.func.vjp(self.fn, a.new_zeros(n * s, *self.in_shape))[1]
        (back,) = vjp(a.reshape(n * s, *self.out_shape))
        return [back.reshape(n, s, *self.in_shape)], None


class Reshape(Op):
    mixing = 0

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0].reshape(xs[0].shape[0], *self.out_shape)

    def interval(self, *bounds: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return self.forward(bounds[0][0]), self.forward(bounds[0][1])

    def backward(self, a: Tensor) -> Backward:
        return [a.reshape(*a.shape[:2], *self.in_shape)], None


class Gather(Op):
    """Every output element is one input element, ``out.flatten()[i] = x.flatten()[index[i]]`` per example (permute,
    transpose, flip, roll, slicing and indexing with constants): exact forward and interval; the backward pass adds
    each coefficient onto the element it came from (an element used twice gets both)."""

    mixing = 0

    def __init__(self, where: str, args: Sequence[int], in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 index: Tensor) -> None:
        super().__init__(where, args, in_shape, out_shape)
        self.index = index

    def forward(self, *xs: Tensor) -> Tensor:
        x = xs[0]
        return x.flatten(1)[:, self.index.to(x.device)].reshape(x.shape[0], *self.out_shape)

    def interval(self, *bounds: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return self.forward(bounds[0][0]), self.forward(bounds[0][1])

    def backward(self, a: Tensor) -> Backward:
        n, s = a.shape[:2]
        k = 1
        for d in self.in_shape:
            k *= int(d)
        back = a.new_zeros(n, s, k).index_add(2, self.index.to(a.device), a.flatten(2))
        return [back.reshape(n, s, *self.in_shape)], None


class Concat(Op):
    """``torch.cat`` of input-dependent tensors along a non-batch axis ``dim`` (counted with the batch axis):
    exact; the backward pass splits the coefficients back onto the parts."""

    mixing = 0

    def __init__(self, where: str, args: Sequence[int], in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 dim: int, sizes: list[int]) -> None:
        super().__init__(where, args, in_shape, out_shape)
        self.dim, self.sizes = dim, sizes

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, self.dim)

    def interval(self, *bounds: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return torch.cat([b[0] for b in bounds], self.dim), torch.cat([b[1] for b in bounds], self.dim)

    def backward(self, a: Tensor) -> Backward:
        return list(torch.split(a, self.sizes, self.dim + 1)), None  # a has the spec axis after the batch axis


class Sum(Op):
    """``x1 * w1 + x2 * w2`` of two input-dependent values of one shape (``w`` = ±1, or ``alpha``): residual
    connections, differences of branches. IBP is not exact on it even after one linear layer (the branches are
    correlated), hence ``mixing = 2``."""

    mixing = 2

    def __init__(self, where: str, args: Sequence[int], shape: tuple[int, ...], weights: tuple[float, float]) -> None:
        super().__init__(where, args, shape, shape)
        self.weights = weights

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0] * self.weights[0] + xs[1] * self.weights[1]

    def interval(self, *bounds: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        lo, hi = bounds[0][0].new_zeros(()), bounds[0][0].new_zeros(())
        for (bl, bh), w in zip(bounds, self.weights, strict=True):
            lo, hi = (lo + w * bl, hi + w * bh) if w >= 0 else (lo + w * bh, hi + w * bl)
        return lo, hi

    def backward(self, a: Tensor) -> Backward:
        return [a * w for w in self.weights], None


class ReLU(Op):
    mixing = 2
    relax: tuple[Tensor, Tensor, Tensor] | None = None  # (lower slope, upper slope, upper intercept), (B, *shape)

    def forward(self, *xs: Tensor) -> Tensor:
        return F.relu(xs[0])

    def interval(self, *bounds: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return F.relu(bounds[0][0]), F.relu(bounds[0][1])

    def set_bounds(self, lo: Tensor, hi: Tensor) -> None:
        """The CROWN relaxation from pre-activation bounds: upper line through (l, 0) and (u, u) where unstable;
        lower slope 1 if ``u > -l`` else 0; exact where the neuron is stably on or off."""
        up = hi.clamp(min=0)
        slope_u = up / (up - lo.clamp(max=0)).clamp(min=1e-12)
        icpt_u = -lo.clamp(max=0) * slope_u
        slope_l = ((hi > 0) & ((lo >= 0) | (hi > -lo))).to(lo.dtype)
        self.relax = (slope_l, slope_u, icpt_u)

    def backward(self, a: Tensor) -> Backward:
        assert self.relax is not None, "ReLU relaxation used before its bounds were computed"
        slope_l, slope_u, icpt_u = (t.unsqueeze(1) for t in self.relax)
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        return [pos * slope_l + neg * slope_u], tail_sum(neg * icpt_u)
