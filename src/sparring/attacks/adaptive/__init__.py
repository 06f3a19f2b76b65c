"""Adaptive attacks: BPDA and EOT as target wrappers, so every gradient attack works through them unchanged.

A defence can make gradient attacks fail without making the model robust (Athalye, Carlini, Wagner 2018,
"Obfuscated Gradients Give a False Sense of Security"): a non-differentiable input transform (quantisation,
JPEG-like rounding, median filtering) *shatters* the gradient, and a randomized model gives *stochastic* gradients
and predictions. The paper's answers are wrappers here, each returning a new :class:`TorchTarget` on the same
model object and spec:

* :func:`with_bpda` — Backward Pass Differentiable Approximation (section 4.1) on sub-modules (forward hooks):
  the forward pass is exactly the model's; on the backward pass chosen modules act as the identity or as a
  differentiable approximation (:mod:`.bpda`).
* :func:`with_graph_bpda` — the same, straight-through, on operations *inside* ``forward`` found in the model's
  TorchScript or FX / ``torch.export`` graph (round, sign, thresholds, integer casts, quantize, argmax/one-hot),
  on a rewritten copy whose outputs are checked bit-identical (:mod:`.graph`).
* :func:`with_eot` — Expectation over Transformation (section 4.2; Athalye, Engstrom, Ilyas, Kwok 2018,
  "Synthesizing Robust Adversarial Examples"): each example is evaluated on several random draws at once and the
  attack sees the expected output (:mod:`.eot`).

:func:`find_gradient_blockers`, :func:`find_graph_blockers` and :func:`is_randomized` detect the cases;
:func:`adaptive` applies what they find. Attacks call ``target.differentiable(...)`` and ``target.query(...)`` as
always::

    defended, notes = adaptive(target, x[:32])
    result = PGD(eps=0.1)(defended, x, y)

Where nothing can be rewritten, gradient-free attacks (:class:`~sparring.attacks.evasion.SPSA`,
:class:`~sparring.attacks.evasion.NES`, :class:`~sparring.attacks.evasion.Square`) are the answer to masking.
"""

from __future__ import annotations

import numpy as np
import torch

from sparring.attacks.adaptive._common import ADAPTIVE_POINTS, check_target, probe
from sparring.attacks.adaptive.bpda import find_gradient_blockers, with_bpda
from sparring.attacks.adaptive.eot import is_randomized, with_eot
from sparring.attacks.adaptive.graph import GraphBlocker, find_graph_blockers, graph_bpda, with_graph_bpda
from sparring.attacks.evasion._checks import check_positive_int
from sparring.targets.torch import TorchTarget

__all__ = [
    "GraphBlocker",
    "adaptive",
    "find_gradient_blockers",
    "find_graph_blockers",
    "is_randomized",
    "with_bpda",
    "with_eot",
    "with_graph_bpda",
]


def adaptive(
    target: TorchTarget, x: torch.Tensor | np.ndarray, *, draws: int = 20
) -> tuple[TorchTarget, list[str]]:
    """Wrap ``target`` for an adaptive evaluation: BPDA where gradients are blocked, EOT if it is randomized.

    Probes the first 64 examples of ``x``, in this order: :func:`find_graph_blockers` (non-differentiable
    operations inside TorchScript/FX graphs; then :func:`with_graph_bpda`), :func:`find_gradient_blockers`
    (sub-modules; then :func:`with_bpda`, straight-through), :func:`is_randomized` (then :func:`with_eot` with
    ``draws``). Never raises on a user's model for want of hooks (TorchScript modules are left to the graph
    rewrite). The audit uses it to retry gradient attacks when its sanity checks suspect gradient masking.

    Args:
        target: the white-box target.
        x: valid inputs to probe (a few dozen real examples are enough).
        draws: EOT draws per example if the model is randomized.

    Returns:
        ``(wrapped, notes)``: the target to attack (``target`` itself when nothing applies) and one human-readable
        note per wrapper applied, each starting with the method (``"BPDA (graph)"``, ``"BPDA"``, ``"EOT"``);
        empty when nothing applies.

    Example:
        >>> from sparring import zoo
        >>> from sparring.attacks.adaptive import adaptive
        >>> target = zoo.load("digits-cnn")
        >>> wrapped, notes = adaptive(target, zoo.data("digits-cnn").x_test[:32])
        >>> wrapped is target, notes
        (True, [])
    """
    t = check_target(target, "adaptive")
    check_positive_int(draws, "draws")
    xt = probe(t, x)[:ADAPTIVE_POINTS]
    wrapped, notes = t, []
    rewritten, ops = graph_bpda(t, xt)
    if rewritten is not None:
        wrapped = rewritten
        notes.append(
            f"BPDA (graph): non-differentiable operation{'s' if len(ops) > 1 else ''} in the model's graph at "
            f"{', '.join(map(str, ops))}; a rewritten copy is straight-through (identity gradient) there, its "
            "outputs checked identical to the model's"
        )
    blockers = find_gradient_blockers(wrapped, xt)
    if blockers:
        wrapped = with_bpda(wrapped, modules=blockers)
        names = ", ".join(f"{n} ({type(m).__name__})" for n, m in blockers)
        notes.append(
            f"BPDA: gradient blocked (zero or disconnected) at {names}; the backward pass treats "
            f"{'it' if len(blockers) == 1 else 'them'} as the identity (straight-through), the forward is unchanged"
        )
    if is_randomized(t, xt):
        wrapped = with_eot(wrapped, draws=draws)
        notes.append(
            f"EOT: the model is randomized (scores differ between passes); gradients and predictions are the mean "
            f"logits over {draws} draws per example (costs {draws} queries per example)"
        )
    return wrapped, notes
