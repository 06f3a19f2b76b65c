"""Small private helpers shared across modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name), at most 300 characters, for error messages."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def reinit_parameters(model: torch.nn.Module, seed: int) -> None:
    """Re-initialise every layer's parameters from ``seed`` without touching the global RNG state.

    The seeding happens inside ``torch.random.fork_rng`` (forking the model's CUDA device too, since
    ``torch.manual_seed`` also seeds CUDA), so callers' random streams are unchanged.
    """
    import torch

    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for m in model.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()


def as_xy(data: Any, split: str, what: str) -> tuple[Any, Any]:
    """``(x, y)`` from a pair, a sparring ``Dataset`` (its ``split``), ``LabelledData``, a torch ``DataLoader``
    or a torch map-style ``Dataset`` of ``(x, y)`` items; ParameterError otherwise.

    A loader (or torch dataset) is read once, in its own order, into two tensors: callers then batch and shuffle with
    their own seeded generator, so results do not depend on the loader's batch size or sampler.
    """
    import torch

    from sparring.errors import ParameterError

    if isinstance(data, tuple | list) and len(data) == 2:
        return data[0], data[1]
    if hasattr(data, f"x_{split}") and hasattr(data, f"y_{split}"):
        return getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y
    if isinstance(data, torch.utils.data.DataLoader | torch.utils.data.Dataset):
        return _collect(data, what)
    raise ParameterError(
        f"{what} must be (x, y), a sparring Dataset (its {split} split is used), LabelledData or a torch "
        f"DataLoader of (x, y) batches; got {type(data).__name__}."
    )


def _collect(data: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the ``(x, y)`` batches of a DataLoader (or the items of a map-style torch Dataset)."""
    import torch

    from sparring.errors import ParameterError

    loader = data if isinstance(data, torch.utils.data.DataLoader) else torch.utils.data.DataLoader(data, 256)
    xs, ys = [], []
    for i, batch in enumerate(loader):
        if not isinstance(batch, tuple | list) or len(batch) < 2:
            raise ParameterError(f"{what}: batch {i} of the loader is not an (x, y) pair; got {type(batch).__name__}.")
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise ParameterError(f"{what}: the loader yielded no batches; give it at least one (x, y) example.")
    return torch.cat(xs), torch.cat(ys)
