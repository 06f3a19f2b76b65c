"""Fine-pruning (Liu, Dolan-Gavitt, Garg 2018, "Fine-Pruning: Defending Against Backdooring Attacks on Deep Neural
Networks", RAID)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparring.errors import ParameterError
from sparring.targets.torch import TorchTarget

__all__ = ["FinePruning", "FinePruningResult"]


@dataclass
class FinePruningResult:
    """The repaired model and how it got there.

    Attributes:
        target: a new :class:`TorchTarget` around the pruned, fine-tuned copy (the original model is untouched).
        pruned: indices of the pruned units (channels of a conv layer, neurons of a linear layer).
        n_units: units in the pruned layer.
        curve: ``(units pruned, clean accuracy)`` on the defender's clean data while pruning.
        accuracy_before, accuracy_pruned, accuracy_after: clean accuracy (defender's data) at each stage.
    """

    target: TorchTarget
    pruned: list[int]
    n_units: int
    curve: list[tuple[int, float]]
    accuracy_before: float
    accuracy_pruned: float
    accuracy_after: float
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"defense": "fine-pruning", "params": self.params, "pruned": len(self.pruned),
                "n_units": self.n_units, "accuracy_before": self.accuracy_before,
                "accuracy_pruned": self.accuracy_pruned, "accuracy_after": self.accuracy_after,
                "seconds": round(self.seconds, 3)}


class FinePruning:
    """Fine-pruning (Liu et al. 2018, section 4): prune, then fine-tune.

    Threat model: the defender has white-box access and a small clean set, but not the trigger. Backdoor behaviour
    tends to live in units that clean inputs leave dormant. The units of ``layer`` (default: the last convolution,
    whose output passes a ReLU) are pruned in increasing order of mean activation on clean data, in steps of
    ``step`` of the layer, while clean accuracy stays within ``max_accuracy_drop`` of the original (or up to a fixed
    ``prune_ratio``). Pruning zeroes the units' weights and biases, which keeps them silent through a following ReLU
    or max-pool. The pruned model is then fine-tuned on the clean data (pruned units stay zero), which the paper
    finds removes what pruning alone leaves of the backdoor.

    Args:
        layer: the ``nn.Conv2d``/``nn.Linear`` to prune (a module of the target's model); default the last
            convolution, or the last hidden linear layer of a network without convolutions.
        prune_ratio: prune exactly this share of the units (overrides ``max_accuracy_drop``).
        max_accuracy_drop: largest clean-accuracy loss allowed while pruning (absolute; the paper's 4%).
        step: share of the units pruned between accuracy checks.
        epochs, lr, batch_size: fine-tuning on the clean data (Adam); ``epochs=0`` prunes only.
        seed: seed of the fine-tuning batches.
    """

    def __init__(self, *, layer: nn.Module | None = None, prune_ratio: float | None = None,
                 max_accuracy_drop: float = 0.04, step: float = 0.05, epochs: int = 10, lr: float = 1e-3,
                 batch_size: int = 32, seed: int = 0) -> None:
        self.layer = layer
        self.prune_ratio = prune_ratio
        self.max_accuracy_drop = max_accuracy_drop
        self.step = step
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {**vars(self), "layer": None if self.layer is None else type(self.layer).__name__}

    def _check(self) -> None:
        if self.prune_ratio is not None and not 0 < self.prune_ratio < 1:
            raise ParameterError(f"prune_ratio must be in (0, 1) or None; got {self.prune_ratio!r}.")
        if not 0 <= self.max_accuracy_drop < 1 or not 0 < self.step < 1:
            raise ParameterError(f"max_accuracy_drop must be in [0, 1) and step in (0, 1); got "
                                 f"{self.max_accuracy_drop!r}, {self.step!r}.")
        if not isinstance(self.epochs, int) or self.epochs < 0 or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ParameterError(f"epochs must be >= 0 and batch_size >= 1 (integers); got {self.epochs!r}, "
                                 f"{self.batch_size!r}.")

    def __call__(self, target: TorchTarget, x_clean: Any, y_clean: Any) -> FinePruningResult:
        """Repair ``target`` with the defender's clean labelled data."""
        self._check()
        if not isinstance(target, TorchTarget):
            raise ParameterError(f"fine-pruning edits the network: it needs a TorchTarget; got "
                                 f"{type(target).__name__}.")
        t0 = time.perf_counter()
        xt, yt = target.spec.validate(x_clean, y_clean)
        assert yt is not None
        xt, yt = xt.to(target.device, target.dtype), yt.to(target.device)
        model = copy.deepcopy(target.model)
        layer = self._layer(target.model, model)
        fresh = TorchTarget(model, target.spec, batch_size=target.batch_size)
        order = _dormancy_order(fresh, layer, xt)
        n = order.numel()
        base = fresh.accuracy(xt, yt)
        chunk = max(1, round(self.step * n))
        counts = [round(self.prune_ratio * n)] if self.prune_ratio is not None else list(range(chunk, n, chunk))
        curve, chosen = [(0, base)], 0
        saved = [p.detach().clone() for p in _unit_params(layer)]
        for k in counts:
            _zero_units(layer, order[:k])
            acc = fresh.accuracy(xt, yt)
            curve.append((k, acc))
            if self.prune_ratio is None and acc < base - self.max_accuracy_drop:
                break
            chosen = k
        with torch.no_grad():
            for p, s in zip(_unit_params(layer), saved, strict=True):
                p.copy_(s)
        pruned = order[:chosen]
        _zero_units(layer, pruned)
        acc_pruned = fresh.accuracy(xt, yt)
        if self.epochs:
            self._finetune(fresh, layer, pruned, xt, yt)
        return FinePruningResult(fresh, sorted(pruned.tolist()), n, curve, base, acc_pruned, fresh.accuracy(xt, yt),
                                 self.get_params(), time.perf_counter() - t0)

    def _layer(self, original: nn.Module, copied: nn.Module) -> nn.Module:
        mods_o, mods_c = list(original.modules()), list(copied.modules())
        if self.layer is not None:
            for mo, mc in zip(mods_o, mods_c, strict=True):
                if mo is self.layer:
                    if not isinstance(mc, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
                        raise ParameterError(f"layer must be a convolution or nn.Linear; got {type(mc).__name__}.")
                    return mc
            raise ParameterError("layer is not a module of the target's model; pass one of model.modules().")
        convs = [m for m in mods_c if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)]
        if convs:
            return convs[-1]
        linears = [m for m in mods_c if isinstance(m, nn.Linear)]
        if len(linears) < 2:
            raise ParameterError("the model has no convolution and no hidden linear layer to prune; pass layer=.")
        return linears[-2]

    def _finetune(self, t: TorchTarget, layer: nn.Module, pruned: torch.Tensor, x: torch.Tensor,
                  y: torch.Tensor) -> None:
        model = t.model
        norm = t.spec.norm_tensors(t.device, t.dtype)
        xn = x if norm is None else (x - norm[0]) / norm[1]
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        model.train()
        for _ in range(self.epochs):
            perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
            for s in range(0, x.shape[0], self.batch_size):
                idx = perm[s : s + self.batch_size]
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(xn[idx]), y[idx]).backward()  # type: ignore[no-untyped-call]
                opt.step()
                _zero_units(layer, pruned)
        opt.zero_grad(set_to_none=True)
        model.eval()


def _unit_params(layer: nn.Module) -> list[torch.Tensor]:
    return [p for p in (getattr(layer, "weight", None), getattr(layer, "bias", None)) if p is not None]


def _zero_units(layer: nn.Module, units: torch.Tensor) -> None:
    with torch.no_grad():
        for p in _unit_params(layer):
            p[units.to(p.device)] = 0.0


def _dormancy_order(t: TorchTarget, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Units of ``layer`` by increasing mean (ReLU'd) activation on ``x``."""
    total: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        a = out.detach().clamp_min(0)
        total.append(a.transpose(0, 1).reshape(a.shape[1], -1).mean(1) * a.shape[0])

    h = layer.register_forward_hook(hook)
    try:
        t.query_labels(x)
    finally:
        h.remove()
    return torch.stack(total).sum(0).argsort().cpu()
