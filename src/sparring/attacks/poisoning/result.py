"""The result every poisoning attack returns: the poisoned training set, what changed, and the trigger."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from sparring.attacks.poisoning.triggers import Trigger
from sparring.attacks.result import AttackResult
from sparring.data.datasets import Dataset
from sparring.errors import ParameterError

__all__ = ["PoisonResult"]


@dataclass
class PoisonResult(AttackResult):
    """A poisoned training set.

    Attributes:
        x, y: the whole training set after poisoning (same kind as given: tensor or numpy); poisoned examples
            replace the originals at ``indices``, nothing is appended.
        indices: sorted indices (int64 tensor) of the examples the attack changed (inputs, labels or both).
        trigger: the backdoor trigger (``None`` for label flipping); stamp test inputs with :meth:`triggered`.
        target_class: the class a backdoor or targeted flip sends inputs to (``None`` for random flipping).
    """

    x: Any = None
    y: Any = None
    indices: torch.Tensor | None = None
    trigger: Trigger | None = None
    target_class: int | None = None

    @property
    def n_poisoned(self) -> int:
        return 0 if self.indices is None else int(self.indices.numel())

    @property
    def poison_mask(self) -> torch.Tensor:
        """Boolean vector over the training set, True at poisoned examples."""
        m = torch.zeros(len(self.y), dtype=torch.bool)
        if self.indices is not None:
            m[self.indices] = True
        return m

    def triggered(self, x: Any) -> Any:
        """``x`` with the trigger stamped on (to measure the attack success rate on test inputs)."""
        if self.trigger is None:
            raise ParameterError(f"{self.attack} plants no trigger; only backdoor attacks make triggered inputs.")
        return self.trigger.apply(x)

    def dataset(self, ds: Dataset) -> Dataset:
        """``ds`` with its training split replaced by the poisoned one (the test split is untouched)."""
        x, y = torch.as_tensor(self.x, dtype=ds.x_train.dtype), torch.as_tensor(self.y, dtype=torch.int64)
        if tuple(x.shape) != tuple(ds.x_train.shape):
            raise ParameterError(
                f"this result poisons a training set of shape {tuple(x.shape)}; {ds.name} has "
                f"{tuple(ds.x_train.shape)}. Poison ds.x_train, ds.y_train."
            )
        return replace(ds, name=f"{ds.name}+{self.attack}", x_train=x, y_train=y)

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        s.update(n=len(self.y), n_poisoned=self.n_poisoned, share=self.n_poisoned / max(len(self.y), 1),
                 target_class=self.target_class, trigger=None if self.trigger is None else self.trigger.to_dict())
        return s
