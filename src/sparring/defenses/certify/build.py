"""Build the op for one node of a traced graph, once the reader has seen what it is (its kind, its input-dependent
arguments, and the shapes per example): the parameters of modules and constants are read live, so the ops follow
training. See :mod:`sparring.defenses.certify.graph`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from sparring.defenses.certify import ops as O
from sparring.defenses.certify.kinds import aten_ops

if TYPE_CHECKING:
    from sparring.defenses.certify.graph import _Parser

__all__ = ["make"]

Tensor = torch.Tensor


def make(p: _Parser, node: fx.Node, kind: str, src: list[fx.Node], ins: tuple[int, ...], outs: tuple[int, ...]
         ) -> O.Op | None:
    """The op of ``node`` (of this ``kind``, reading the values of ``src``; ``ins``/``outs`` are shapes per
    example), or None where the node passes its input through unchanged (identity, eval dropout, casts)."""
    where, args = p.where(node), [p.var[s] for s in src]
    m = p.root.get_submodule(str(node.target)) if node.op == "call_module" else None
    if kind in ("identity", "dropout", "cast"):
        return None
    if kind == "relu":
        return O.ReLU(where, args, ins, outs)
    if kind == "clamp":
        return clamp(p, node, where, args[0], ins, m)
    if kind == "leaky":
        slope = float(m.negative_slope if isinstance(m, nn.LeakyReLU) else p.value(node, 1, "negative_slope", 0.01))
        r = _push(p, O.ReLU(f"{where}/relu", args, ins, ins))
        return O.Sum(where, [args[0], r], ins, (slope, 1.0 - slope))  # αx + (1 - α) relu(x)
    if kind == "reshape":
        if _numel(ins) != _numel(outs):
            raise p.unsupported(node, " that changes the number of values per example")
        return O.Reshape(where, args, ins, outs)
    if kind == "linear":
        if isinstance(m, nn.Linear):
            return O.Linear(where, args, ins, outs, lambda: m.weight, lambda: m.bias)
        return O.Linear(where, args, ins, outs, p.live(node, 1, "weight"), p.live(node, 2, "bias"))
    if kind == "matmul":
        w = p.live(node, 1, "other")
        if p.tensor(w()).ndim != 2:
            raise p.unsupported(node, " with a constant that is not a matrix")
        return O.Linear(where, args, ins, outs, lambda: w().T, lambda: None)
    if kind == "conv":
        return conv(p, node, where, args, ins, outs, m)
    if kind == "bn":
        return batch_norm(p, node, where, args, ins, m)
    if kind in ("pool", "reduce"):
        return O.PositiveLinear(where, args, ins, outs, linear_map(p, node, m))
    if kind == "gather":
        return O.Gather(where, args, ins, outs, selection(p, node, ins, outs))
    if kind == "cat":
        dim = int(p.value(node, 1, "dim", 0)) % (len(outs) + 1)
        sizes = [int(p.env_tensor(a).shape[dim]) for a in src]
        return O.Concat(where, args, ins, outs, dim, sizes)
    if outs != ins:
        raise p.unsupported(node, f" that broadcasts the input-dependent tensor from {ins} to {outs}")
    return arithmetic(p, node, kind, where, args, ins)


def _push(p: _Parser, op: O.Op) -> int:
    """Append an inner op of a node written as several; return the index of its value."""
    p.ops.append(op)
    return len(p.ops)


def clamp(p: _Parser, node: fx.Node, where: str, x: int, shape: tuple[int, ...], m: nn.Module | None) -> O.Op:
    """``clamp(x, a, b) = a + relu(x - a) - relu(x - b)`` (``a <= b``), ``a + relu(x - a)`` or ``b - relu(b - x)``
    with one limit: exact, so IBP and CROWN bound it through their ReLU relaxations."""
    t = node.target
    name = (t if isinstance(t, str) else getattr(t, "__name__", str(t))).split(".")[0]  # aten: "clamp_min.default"

    def arg(i: int, key: str, default: Any = None) -> Callable[[], Any]:
        given = len(node.args) > i or key in node.kwargs
        return p.live(node, i, key) if given else (lambda: default)

    lo_get: Callable[[], Any]
    hi_get: Callable[[], Any]
    if isinstance(m, nn.Hardtanh):  # ReLU6 too
        lo_val, hi_val = float(m.min_val), float(m.max_val)
        lo_get, hi_get = (lambda: lo_val), (lambda: hi_val)
    elif name.startswith("hardtanh"):
        lo_get, hi_get = arg(1, "min_val", -1.0), arg(2, "max_val", 1.0)
    elif name.startswith("relu6"):
        lo_get, hi_get = (lambda: 0.0), (lambda: 6.0)
    elif name.startswith("clamp_min"):
        lo_get, hi_get = arg(1, "min"), (lambda: None)
    elif name.startswith("clamp_max"):
        lo_get, hi_get = (lambda: None), arg(1, "max")
    else:
        lo_get, hi_get = arg(1, "min"), arg(2, "max")

    def limit(get: Callable[[], Any]) -> Callable[[], Tensor]:
        return lambda: p.tensor(get())

    has_lo, has_hi = lo_get() is not None, hi_get() is not None
    if not has_lo and not has_hi:
        raise p.unsupported(node, " without a limit")
    a, b = limit(lo_get), limit(hi_get)
    one = p.tensor(1.0)
    if has_lo and has_hi and bool((a() > b()).any()):
        raise p.unsupported(node, " with min > max (it returns max everywhere)")
    if has_lo:
        r1 = _push(p, O.ReLU(f"{where}/min", [_push(p, O.Affine(f"{where}/-min", [x], shape, lambda: (one, -a())))],
                             shape, shape))
        if not has_hi:
            return O.Affine(where, [r1], shape, lambda: (one, a()))
        r2 = _push(p, O.ReLU(f"{where}/max", [_push(p, O.Affine(f"{where}/-max", [x], shape, lambda: (one, -b())))],
                             shape, shape))
        s = _push(p, O.Sum(f"{where}/sum", [r1, r2], shape, (1.0, -1.0)))
        return O.Affine(where, [s], shape, lambda: (one, a()))
    r = _push(p, O.ReLU(f"{where}/max", [_push(p, O.Affine(f"{where}/max-", [x], shape, lambda: (-one, b())))],
                        shape, shape))
    return O.Affine(where, [r], shape, lambda: (-one, b()))


def linear_map(p: _Parser, node: fx.Node, m: nn.Module | None) -> Callable[[Tensor], Tensor]:
    if m is not None:
        return m  # type: ignore[return-value]
    rest = fx.node.map_arg(node.args[1:], lambda n: p.const[n]())  # constants, nested ones too
    kw = fx.node.map_arg(node.kwargs, lambda n: p.const[n]())
    if node.op == "call_method":
        name = str(node.target)
        return lambda t: getattr(t, name)(*rest, **kw)  # type: ignore[no-any-return]
    fn = node.target
    return lambda t: fn(t, *rest, **kw)  # type: ignore[operator, no-any-return]


def selection(p: _Parser, node: fx.Node, ins: tuple[int, ...], outs: tuple[int, ...]) -> Tensor:
    """Which input element each output element of a gather-like op is, found by running the op on the
    elements' own indices (two examples, to see that it keeps them apart)."""
    fn, n = linear_map(p, node, None), _numel(ins)
    ids = torch.arange(2 * n, dtype=torch.float64, device=p.device).reshape(2, *ins)
    with torch.no_grad():
        got = fn(ids)
    if not isinstance(got, Tensor) or tuple(got.shape) != (2, *outs) or not torch.equal(got[1] - got[0],
                                                                                      torch.full_like(got[0], n)):
        raise p.unsupported(node, " with these arguments (it mixes the batch axis)")
    return got[0].reshape(-1).to(torch.long)


def conv(p: _Parser, node: fx.Node, where: str, args: list[int], ins: tuple[int, ...], outs: tuple[int, ...],
         m: nn.Module | None) -> O.Op:
    if len(ins) != 3:
        raise p.unsupported(node, f" on inputs of shape {ins} (only 2-D convolutions)")
    weight: Callable[[], Any]
    bias: Callable[[], Any]
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            raise p.unsupported(node, f" with padding_mode={m.padding_mode!r} (only 'zeros')")
        weight, bias = (lambda: m.weight), (lambda: m.bias)
        stride, padding, dilation, groups = m.stride, m.padding, m.dilation, m.groups
    else:
        weight, bias = p.live(node, 1, "weight"), p.live(node, 2, "bias")
        aten_conv = node.target in aten_ops("convolution.default")
        stride, padding = p.value(node, 3, "stride", 1), p.value(node, 4, "padding", 0)
        dilation = p.value(node, 5, "dilation", 1)
        if aten_conv:
            if p.value(node, 6, "transposed", False):
                raise p.unsupported(node, " (transposed)")
            groups = p.value(node, 8, "groups", 1)
        else:
            groups = p.value(node, 6, "groups", 1)
    dil, k = _pair(dilation), tuple(weight().shape[2:])
    if padding == "valid":
        pad = (0, 0)
    elif isinstance(padding, str):  # "same": symmetric only
        total = [d * (kk - 1) for d, kk in zip(dil, k, strict=True)]
        if any(t % 2 for t in total):
            raise p.unsupported(node, " with asymmetric padding='same' (even kernel); pad explicitly")
        pad = (total[0] // 2, total[1] // 2)
    else:
        pad = _pair(padding)
    return O.Conv(where, args, ins, outs, weight, bias, _pair(stride), pad, dil, int(groups))


def batch_norm(p: _Parser, node: fx.Node, where: str, args: list[int], ins: tuple[int, ...], m: nn.Module | None
               ) -> O.Op:
    w: Callable[[], Any]
    b: Callable[[], Any]
    rm: Callable[[], Any]
    rv: Callable[[], Any]
    if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
        mm = m
        w, b, rm, rv = (lambda: mm.weight), (lambda: mm.bias), (lambda: mm.running_mean), (lambda: mm.running_var)
        eps = float(m.eps)
    elif node.target is F.batch_norm:
        rm, rv, w, b = (p.live(node, i, n) for i, n in ((1, "running_mean"), (2, "running_var"),
                                                           (3, "weight"), (4, "bias")))
        eps = float(p.value(node, 7, "eps", 1e-5))
    else:
        w, b, rm, rv = (p.live(node, i, n) for i, n in ((1, "weight"), (2, "bias"), (3, "running_mean"),
                                                           (4, "running_var")))
        legit = node.target in aten_ops("_native_batch_norm_legit_no_training.default")
        eps = float(p.value(node, 6 if legit else 7, "eps", 1e-5))
    if rm() is None or rv() is None:
        raise p.unsupported(node, " without running statistics (track_running_stats=False)")
    view = (-1,) + (1,) * (len(ins) - 1)

    def params() -> tuple[Tensor, Tensor]:
        mean, var = rm(), rv()
        assert mean is not None and var is not None  # checked above; buffers are not removed later
        weight, bias = w(), b()
        scale = torch.rsqrt(var + eps)
        if weight is not None:
            scale = scale * weight
        shift = -mean * scale
        if bias is not None:
            shift = shift + bias
        return scale.reshape(view), shift.reshape(view)

    return O.Affine(where, args, ins, params)


def arithmetic(p: _Parser, node: fx.Node, kind: str, where: str, args: list[int], shape: tuple[int, ...]) -> O.Op:
    alpha = float(node.kwargs.get("alpha", 1.0))  # type: ignore[arg-type]
    if kind == "neg":
        one = p.tensor(1.0)
        return O.Affine(where, args, shape, lambda: (-one, one * 0))
    first_var = isinstance(node.args[0], fx.Node) and node.args[0] in p.var
    if len(args) == 2:  # both operands follow the input: a sum of branches
        sign = -1.0 if kind in ("sub", "rsub") else 1.0
        w = (1.0, sign * alpha) if kind != "rsub" else (sign * alpha, 1.0)
        return O.Sum(where, args, shape, w)
    other = p.getter(node.args[1] if first_var else node.args[0])
    ndim = len(shape)

    def c() -> Tensor:
        t = p.tensor(other())
        if t.ndim > ndim:  # a leading batch axis of size 1
            if t.ndim != ndim + 1 or t.shape[0] != 1:
                raise p.unsupported(node, f" with a constant of shape {tuple(t.shape)} (one per example?)")
            t = t[0]
        return t

    c()  # refuse a bad constant now, not at the first bound
    one, zero = p.tensor(1.0), p.tensor(0.0)
    if kind == "mul":
        return O.Affine(where, args, shape, lambda: (c(), zero))
    if kind == "div":
        return O.Affine(where, args, shape, lambda: (1 / c(), zero))
    if kind == "add":
        return O.Affine(where, args, shape, (lambda: (one, c() * alpha)) if first_var else
                        (lambda: (one * alpha, c())))
    if (kind == "sub") == first_var:  # x - c
        return O.Affine(where, args, shape, lambda: (one, -c() * alpha))
    return O.Affine(where, args, shape, lambda: (-one * alpha, c()))  # c - x (and aten's rsub(x, c))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(x) for x in v)
    return (t[0], t[0]) if len(t) == 1 else (t[0], t[1])
