"""Model kinds: what sort of system an audit is about, how to load it, and which checks apply to it.

An audit's system is one of a few *kinds*, each a small object registered in :data:`KINDS` (most specific first):

* ``llm`` — an LLM application (``system.llm``, see :mod:`sparring.audit.llm_system`): a chat model plus the
  application's system prompt, planted secret and documents; the audit data is the
  :class:`~sparring.llm.app.Application` itself (``x`` is ``[application]``, ``y`` is ``None``).
* ``text`` — a text classifier (``system.text``, a text zoo model, a text pipeline file; see
  :mod:`sparring.audit.text_system`): ``x`` is a list of messages, ``y`` their labels.
* ``tensor`` — a model on tensors (images, feature vectors): a zoo name, a model file or an ``http(s)://``
  endpoint with an InputSpec; ``x``/``y`` are tensors validated by the spec. It claims whatever the others do not.

A kind answers three questions: :meth:`ModelKind.load` (the target, the attacker's view of it and the audit data, or
``None`` when the threat model describes another kind), :meth:`ModelKind.owns` (whether a loaded target is of this
kind, for planning) and :meth:`ModelKind.skip_reason` (why a check that does not list the kind in its ``inputs`` is
skipped). A check declares the kinds it runs on as ``inputs`` (default ``("tensor",)``); the planner and the runner
only walk :data:`KINDS`, so a new kind plugs in without an ``if`` in the runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

from sparring.errors import ParameterError

if TYPE_CHECKING:
    import torch

    from sparring.audit.threat import ThreatModel
    from sparring.targets.base import Target

__all__ = ["KINDS", "LoadedSystem", "ModelKind", "kind_of", "load_any", "register_kind", "takes"]

LoadedSystem = tuple[Any, Any, Any, Any]
"""``(target, attacker view, x, y)``: what :meth:`ModelKind.load` returns."""


class ModelKind(Protocol):
    """One kind of audited system (see the module docstring)."""

    name: str
    """The value checks list in ``inputs`` (``"tensor"``, ``"text"``, ``"llm"``)."""
    label: str
    """What the kind is, in words, for skip reasons."""

    def load(self, tm: ThreatModel, target: Any, data: tuple[Any, Any] | None) -> LoadedSystem | None: ...

    def owns(self, target: Any) -> bool: ...

    def skip_reason(self, check: Any, target: Any) -> str: ...


KINDS: dict[str, ModelKind] = {}


def register_kind(kind: ModelKind) -> ModelKind:
    """Add ``kind`` to :data:`KINDS` (the order is the order :func:`load_any` tries them in)."""
    KINDS[kind.name] = kind
    return kind


def load_any(tm: ThreatModel, target: Any = None, data: tuple[Any, Any] | None = None) -> LoadedSystem:
    """The first kind's system that claims ``tm`` (or the in-memory ``target``)."""
    for kind in KINDS.values():
        loaded = kind.load(tm, target, data)
        if loaded is not None:
            return loaded
    raise ParameterError(  # pragma: no cover - the tensor kind claims every system
        f"no model kind ({', '.join(KINDS)}) can load system.model {tm.system.model!r}.")


def kind_of(target: Any) -> ModelKind:
    """The kind of a loaded target (the tensor kind owns every target the others do not)."""
    for kind in KINDS.values():
        if kind.owns(target):
            return kind
    return KINDS["tensor"]  # pragma: no cover - the tensor kind owns everything


def takes(check: Any, kind: ModelKind) -> bool:
    """Whether ``check`` runs on systems of ``kind``: checks declare ``inputs`` (default: tensors only)."""
    return kind.name in getattr(check, "inputs", ("tensor",))


# ---------------------------------------------------------------------------------------------- llm
class LlmKind:
    name = "llm"
    label = "an LLM application"

    def load(self, tm: ThreatModel, target: Any, data: tuple[Any, Any] | None) -> LoadedSystem | None:
        from sparring.audit.llm_system import load_llm_system

        return load_llm_system(tm, target, data)

    def owns(self, target: Any) -> bool:
        from sparring.audit.llm_system import LlmAppTarget

        return isinstance(target, LlmAppTarget)

    def skip_reason(self, check: Any, target: Any) -> str:
        return (f"works on {_inputs(check)}; this system is an LLM application ({target.chat.name}): the "
                "llm-redteam check covers it")


# ---------------------------------------------------------------------------------------------- text
class TextKind:
    name = "text"
    label = "a text model"

    def load(self, tm: ThreatModel, target: Any, data: tuple[Any, Any] | None) -> LoadedSystem | None:
        from sparring.audit.text_system import load_text_system

        if getattr(tm.system, "llm", None) is not None:
            return None
        return load_text_system(tm, target, data)

    def owns(self, target: Any) -> bool:
        from sparring.targets.text import TextTarget

        return isinstance(target, TextTarget)

    def skip_reason(self, check: Any, target: Any) -> str:
        return (f"works on {_inputs(check)}; this is a text model ({type(target).__name__}): the text-evasion "
                "check covers it")


def _inputs(check: Any) -> str:
    words = {"tensor": "tensor inputs (images, feature vectors)", "text": "text models", "llm": "LLM applications"}
    return " and ".join(words.get(i, i) for i in getattr(check, "inputs", ("tensor",)))


# ---------------------------------------------------------------------------------------------- tensor
class TensorKind:
    name = "tensor"
    label = "a model on tensors"

    def load(self, tm: ThreatModel, target: Any, data: tuple[Any, Any] | None) -> LoadedSystem | None:
        return load_tensor_system(tm, target, data)

    def owns(self, target: Any) -> bool:
        return True

    def skip_reason(self, check: Any, target: Any) -> str:
        return f"works on {_inputs(check)} only; this system is a {type(target).__name__}"


def load_tensor_system(tm: ThreatModel, target: Target | None = None, data: tuple[Any, Any] | None = None
                       ) -> tuple[Target, Target, torch.Tensor, torch.Tensor]:
    """The tensor target (full access), the target as the attacker sees it (``exposure`` applied), and ``(x, y)``."""
    from sparring.audit.registry import PlanContext

    exp = tm.exposure
    view: dict[str, Any] = {}
    if exp.output == "top-k":
        view["top_k"] = exp.top_k
    if exp.decimals is not None:
        view["decimals"] = exp.decimals
    given = target is not None
    if target is None:
        target = _load(tm, {})
    cap = PlanContext(tm, target).access
    if cap < target.access:
        view["access"] = cap
    attacker = target if not view else _load(tm, view) if not given else _view(target, view)
    if data is None:
        x, y = _data(tm, target)
        if hasattr(target, "check_agreement"):  # a converted ONNX graph: it must match onnxruntime on the audit data
            target.check_agreement(x)
    else:
        n = tm.system.data.n
        x, y_ = target.spec.validate(data[0][:n], data[1][:n])
        assert y_ is not None
        y = y_
    if tm.system.units != "raw":  # per-feature budget units: every check sees the model and rows in them
        from sparring.audit.units import system_in_units

        return system_in_units(tm, target, attacker, x, y)
    return target, attacker, x, y


def _view(target: Target, view: dict[str, Any]) -> Target:
    from sparring.targets.torch import TorchTarget

    if isinstance(target, TorchTarget):
        return TorchTarget(target.model, target.spec, batch_size=target.batch_size, output=target.output, **view)
    raise ParameterError(
        f"the threat model restricts what the attacker sees ({', '.join(view)}), which sparring can apply to an "
        f"in-memory TorchTarget only; build the {type(target).__name__} with those settings and knowledge: white-box."
    )


def _load(tm: ThreatModel, extra: dict[str, Any]) -> Target:
    s = tm.system
    if s.model.startswith(("http://", "https://")):
        from sparring.targets.http import HttpTarget
        from sparring.targets.load import load_spec

        if s.spec is None:
            raise ParameterError("system.spec (an InputSpec JSON file) is needed for an http(s) endpoint.")
        output: Literal["scores", "labels"] = "labels" if tm.exposure.output == "labels" else "scores"
        extra = {k: v for k, v in extra.items() if k != "access"}
        if s.http is not None:
            from sparring.targets.text_load import expand_env

            h = s.http
            extra = {"headers": {k: expand_env(v, f"system.http.headers.{k}") for k, v in h.headers.items()},
                     "timeout": h.timeout, "retries": h.retries, "input_key": h.input_key,
                     "output_key": h.output_key, "score_kind": h.output, **extra}
        return HttpTarget(s.model, load_spec(s.spec), output=output, batch_size=min(s.batch_size, 256), **extra)
    from sparring.targets.load import load_target

    if s.model.lower().endswith(".onnx") and tm.attacker.knowledge == "white-box":
        extra = {**extra, "white_box": True}  # gradients through the graph converted to torch, checked against ORT
    return load_target(s.model, spec=s.spec, entry_point=s.entry_point, trust_pickle=s.trust_pickle,
                       trusted_types=s.trusted_types, device=s.device, batch_size=s.batch_size, **extra)


def _data(tm: ThreatModel, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
    d = tm.system.data
    if d.source == "zoo":
        from sparring.data import zoo

        if tm.system.model not in zoo.names():
            raise ParameterError(
                f"system.data.source 'zoo' works for zoo models only; {tm.system.model!r} needs a data file "
                "(.npz with x and y, a CSV with a label column, or an image folder)."
            )
        ds = zoo.data(tm.system.model)
        x, y = (ds.x_test, ds.y_test) if d.split == "test" else (ds.x_train, ds.y_train)
    else:
        from sparring.data.files import load_data

        loaded = load_data(d.source, **d.load_options())
        x, y = loaded[0], loaded[1]
    xt, yt = target.spec.validate(x[: d.n], y[: d.n])
    assert yt is not None
    return xt, yt


register_kind(LlmKind())
register_kind(TextKind())
register_kind(TensorKind())
