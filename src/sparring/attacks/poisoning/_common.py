"""Validation and sampling shared by the poisoning attacks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sparring.errors import ParameterError
from sparring.targets.spec import InputSpec


def check_share(share: float, name: str = "poison_share") -> None:
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
        raise ParameterError(f"{name} must be a fraction in (0, 1), e.g. 0.05 for 5% of the training set; "
                             f"got {share!r}.")


def check_class(c: int | None, spec: InputSpec, name: str = "target_class") -> int:
    if isinstance(c, bool) or not isinstance(c, int | np.integer) or not 0 <= c < spec.n_classes:
        raise ParameterError(f"{name} must be a class index in 0..{spec.n_classes - 1}; got {c!r}.")
    return int(c)


def validate(spec: InputSpec, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(spec, InputSpec):
        raise ParameterError(f"spec must be the data's InputSpec; got {type(spec).__name__}.")
    xt, yt = spec.validate(x, y)
    assert yt is not None
    return xt, yt


def generator(gen: torch.Generator | None, seed: int) -> torch.Generator:
    return gen if gen is not None else torch.Generator().manual_seed(int(seed))


def choose(pool: torch.Tensor, k: int, gen: torch.Generator, what: str) -> torch.Tensor:
    """``k`` distinct entries of ``pool`` drawn uniformly (sorted), or a ParameterError if the pool is smaller."""
    if k > pool.numel():
        raise ParameterError(
            f"{what} needs {k} examples but only {pool.numel()} are eligible; lower the poison share."
        )
    pick = pool[torch.randperm(pool.numel(), generator=gen)[:k]]
    return pick.sort().values


def like(v: torch.Tensor, ref: Any) -> Any:
    return v.numpy() if isinstance(ref, np.ndarray) else v.to(ref.device) if isinstance(ref, torch.Tensor) else v
