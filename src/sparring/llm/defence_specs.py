"""What the ``defences:`` list of an application names: :class:`DefenceSpec`, the defences and the parameters each
takes, and their checks. A low module that :mod:`sparring.llm.app` (which reads the YAML) and
:mod:`sparring.llm.defenses` (which applies them) both import."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sparring.errors import ThreatModelError

__all__ = ["DEFENCES", "DefenceSpec", "check_spec", "specs_from_yaml"]


@dataclass(frozen=True)
class DefenceSpec:
    """A defence named in the application's ``defences:`` list, with its parameters (see
    :mod:`sparring.llm.defenses`)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)


#: defence name -> the parameters it takes (with their types)
DEFENCES: dict[str, dict[str, type]] = {
    "delimiting": {}, "datamarking": {"marker": str}, "encoding": {}, "sandwich": {"reminder": str},
    "canary": {"token": str}, "input-guard": {"threshold": float, "heuristics": bool, "classifier": bool},
    "output-filter": {},
}


def check_spec(spec: DefenceSpec) -> None:
    """Raise :class:`ThreatModelError` for an unknown defence or parameter, naming the nearest valid one."""
    import difflib

    if spec.name not in DEFENCES:
        close = difflib.get_close_matches(spec.name, DEFENCES, n=1)
        raise ThreatModelError(f"unknown defence {spec.name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                               + f"; defences: {', '.join(DEFENCES)}.")
    allowed = DEFENCES[spec.name]
    for k, v in spec.params.items():
        if k not in allowed:
            raise ThreatModelError(f"defence {spec.name!r} takes no parameter {k!r}; it takes: "
                                   f"{', '.join(allowed) or 'none'}.")
        want = allowed[k]
        ok = isinstance(v, int | float) and not isinstance(v, bool) if want is float else isinstance(v, want)
        if not ok:
            raise ThreatModelError(f"defence {spec.name!r} parameter {k!r} must be a {want.__name__}; got {v!r}.")
    if spec.name == "input-guard" and not 0 < float(spec.params.get("threshold", 0.5)) < 1:
        raise ThreatModelError("input-guard threshold must be in (0, 1).")
    if spec.name == "datamarking" and not str(spec.params.get("marker", "\u02c6")).strip():
        raise ThreatModelError("datamarking marker must be a visible character such as '\u02c6'.")


def specs_from_yaml(raw: Any, source: str) -> tuple[DefenceSpec, ...]:
    """The ``defences:`` list of an application file: names, or mappings with ``name`` and parameters."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ThreatModelError(f"{source}: defences must be a list such as [datamarking, input-guard]; got {raw!r}.")
    specs = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            spec = DefenceSpec(item)
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            spec = DefenceSpec(item["name"], {str(k): v for k, v in item.items() if k != "name"})
        else:
            raise ThreatModelError(f"{source}: defences[{i}] must be a name or a mapping with a name; got {item!r}.")
        try:
            check_spec(spec)
        except ThreatModelError as exc:
            raise ThreatModelError(f"{source}: defences[{i}]: {exc}") from None
        specs.append(spec)
    if len({s.name for s in specs}) != len(specs):
        raise ThreatModelError(f"{source}: a defence is listed twice in defences.")
    return tuple(specs)
