"""A PyTorch model as a white-box target."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from sparring.errors import InputSpecError, ParameterError
from sparring.targets.base import ScoreKind, Target
from sparring.targets.spec import Access, InputSpec

__all__ = ["TorchTarget", "frozen_parameters"]


@contextmanager
def frozen_parameters(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """``requires_grad`` off on ``params`` for the duration; each parameter's flag is restored after."""
    ps = [p for p in params if p.requires_grad]  # the others need neither switching off nor restoring
    for p in ps:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in ps:
            p.requires_grad_(True)

Forward = Callable[[torch.Tensor], torch.Tensor]


class TorchTarget(Target):
    """A ``torch.nn.Module`` classifier under test, with gradient access.

    The model is put in eval mode. Inputs are in raw space (``spec.bounds``); ``spec.mean``/``spec.std`` are applied
    inside, so attacks and budgets never see normalised values. The device follows the model's parameters. During
    an attack (:meth:`frozen`) the weights stop requiring gradients and are restored afterwards.

    Args:
        model: maps a batch ``(N, *spec.shape)`` (normalised if the spec says so) to ``(N, n_classes)`` scores.
        spec: the input specification.
        access, output, batch_size, query_budget, top_k, decimals: see :class:`~sparring.targets.Target`.

    Example:
        >>> import torch
        >>> from sparring.targets import InputSpec, TorchTarget
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> t = TorchTarget(net, InputSpec(shape=(4,), n_classes=3, layout="features"))
        >>> t.predict(torch.zeros(2, 4)).shape
        torch.Size([2])
    """

    native_access = Access.GRADIENTS

    def __init__(
        self,
        model: nn.Module,
        spec: InputSpec,
        *,
        access: Access | None = None,
        output: ScoreKind = "logits",
        batch_size: int = 256,
        query_budget: int | None = None,
        top_k: int | None = None,
        decimals: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ParameterError(f"TorchTarget needs a torch.nn.Module; got {type(model).__name__}.")
        super().__init__(
            spec, access=access, output=output, batch_size=batch_size, query_budget=query_budget,
            top_k=top_k, decimals=decimals,
        )
        self.model = model.eval()
        self._device = _module_device(model)
        self._dtype = _module_dtype(model)
        self._check_output_shape()

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def _check_output_shape(self) -> None:
        lo, hi = self.spec.bounds_tensors(self._device, self._dtype)
        probe = ((lo + hi) / 2).expand(1, *self.spec.shape)
        try:
            with torch.no_grad():
                out = self._raw_forward()(probe)
        except RuntimeError as exc:
            raise InputSpecError(
                f"the model fails on an input of the declared shape (1, {', '.join(map(str, self.spec.shape))}): "
                f"{exc}. Check InputSpec.shape and layout."
            ) from exc
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, self.spec.n_classes):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputSpecError(
                f"the model returns {got} for one example; the spec declares {self.spec.n_classes} classes, so "
                f"(1, {self.spec.n_classes}) was expected. Fix InputSpec.n_classes or wrap the model to return logits."
            )

    def _raw_forward(self) -> Forward:
        model = self.model
        norm = self.spec.norm_tensors(self._device, self._dtype)
        if norm is None:
            return model
        mean, std = norm
        inv_std = 1.0 / std

        def forward(x: torch.Tensor) -> torch.Tensor:
            return model((x - mean) * inv_std)  # type: ignore[no-any-return]

        return forward

    def _scores_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self._raw_forward()(x.to(self._dtype))

    # ------------------------------------------------------------------ white-box
    def differentiable(self, attack: str = "this attack") -> Forward:
        """The forward function ``raw x -> logits`` with autograd, counting each example as a query.

        Raises :class:`~sparring.errors.AccessError` if the target was restricted below gradient access.
        """
        self.require(Access.GRADIENTS, attack)
        fwd = self._raw_forward()
        charge = self.counter.charge

        def counted(x: torch.Tensor) -> torch.Tensor:
            charge(x.shape[0])
            out = fwd(x)
            if x.requires_grad and not out.requires_grad and torch.is_grad_enabled():
                # The forward cut the graph (a threshold, .detach(), argmax/one-hot, an int cast): the input gradient
                # is zero. Attacks see that as masking (zero_gradient_examples; the audit's sanity checks and BPDA
                # retry take it from there), not as an autograd error.
                out = out + 0.0 * x.reshape(x.shape[0], -1)[:, :1].to(out.dtype)
            return out

        return counted

    @contextmanager
    def frozen(self) -> Iterator[TorchTarget]:
        """Eval mode and no weight gradients for the duration; the previous state is restored after."""
        was_training = self.model.training
        switch = any(m.training for m in self.model.modules())  # already in eval mode (the usual case): leave it
        if switch:
            self.model.eval()
        try:
            with frozen_parameters(self.model.parameters()):
                yield self
        finally:
            if switch:
                self.model.train(was_training)

    def loss_gradient(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Gradient of ``loss(logits, y)`` (default: summed cross-entropy) with respect to raw inputs ``x``."""
        xt, yt = self.spec.validate(x, y)
        assert yt is not None
        loss_fn = loss or (lambda z, t: torch.nn.functional.cross_entropy(z, t, reduction="sum"))
        fwd = self.differentiable("loss_gradient")
        grads = []
        with self.frozen():
            for start in range(0, xt.shape[0], self.batch_size):
                xb = xt[start : start + self.batch_size].to(self._device, self._dtype).requires_grad_(True)
                yb = yt[start : start + self.batch_size].to(self._device)
                (g,) = torch.autograd.grad(loss_fn(fwd(xb), yb), xb)
                grads.append(g)
        return torch.cat(grads).to(x.device if isinstance(x, torch.Tensor) else "cpu")

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["device"] = str(self._device)
        d["model"] = type(self.model).__name__
        d["parameters"] = sum(p.numel() for p in self.model.parameters())
        return d


def _module_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _module_dtype(model: nn.Module) -> torch.dtype:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32
