"""``sparring init`` for a text model: an annotated threat model with ``system.text`` and no input spec."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["text_threat_model_template"]


def _list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_scalar(v) for v in values) + "]"


def _mapping(m: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{_scalar(k)}: {_scalar(v)}" for k, v in m.items()) + "}"


def _scalar(v: str | None) -> str:
    import json

    return "null" if v is None else json.dumps(v, ensure_ascii=False)


def text_threat_model_template(model: str, *, data: str | None = None, n: int = 200, trust_pickle: bool = False,
                               trusted_types: Sequence[str] = (), classes: Sequence[str] | None = None,
                               text_column: str | None = None, label_column: str | None = None,
                               path: str = "threat.yaml", http: Mapping[str, Any] | None = None) -> str | None:
    """The template for a text system (see :mod:`sparring.audit.text_system`), or ``None`` when ``model`` is not
    a text model (``sparring init`` then writes the tensor template).

    The model and its messages are loaded as ``sparring audit`` will load them, the clean accuracy is measured,
    and the clean-accuracy gate is set just under it. ``http`` holds ``system.text``'s HTTP keys for a URL
    (``input_key``, ``output_key``, ``headers``, ``timeout``, ``output``); header values are written as given, so
    ``${VAR}`` stays a reference to the environment and no secret lands in the file.
    """
    from sparring.audit.text_system import TextSystem, load_text_system
    from sparring.audit.threat import parse_threat_model

    text: dict[str, Any] = {k: v for k, v in (("classes", list(classes) if classes else None),
                                              ("text_column", text_column), ("label_column", label_column))
                            if v is not None}
    text.update({k: v for k, v in (http or {}).items() if v not in (None, {}, ())})
    system: dict[str, Any] = {"model": model, "trust_pickle": trust_pickle, "data": {"source": data or "zoo", "n": n}}
    if text:
        system["text"] = text
    system["trusted_types"] = list(trusted_types)
    tm = parse_threat_model({"system": system}, source="sparring init")
    loaded = load_text_system(tm)
    if loaded is None:
        return None
    target, _, texts, y = loaded
    acc = float((target.query(texts).argmax(dim=1).cpu() == y.cpu()).float().mean())
    names = list(target.class_names) if target.class_names is not None else [str(i) for i in range(target.n_classes)]
    ts = tm.system.text or TextSystem()
    gate = max(0.0, math.floor((acc - 0.02) * 100) / 100)
    url = model.startswith(("http://", "https://"))
    http_keys = (f"""    input_key: {ts.input_key}         # request key of the messages: POST {{input_key: [str, ...]}}
    output_key: {ts.output_key}        # answer key holding the scores: {{output_key: [[...], ...]}}
    headers: {_mapping(ts.headers)}   # e.g. {{Authorization: "Bearer ${{MOD_TOKEN}}"}} (${{VAR}}: from the environment)
    timeout: {ts.timeout:g}
    output: {_scalar(ts.output)}              # probabilities | logits (null: probabilities)
""" if url else "")
    trusted = _list(list(trusted_types))
    trusted_line = f"  trusted_types: {trusted}         # skops types to trust beyond skops' defaults\n"
    return f"""# sparring threat model (schema version 1). Written by `sparring init`; edit, then run:
#   sparring audit {path} --out sparring-report
# Measured now: clean accuracy {acc:.4f} on {len(texts)} messages; a text model with {target.n_classes} classes
# ({', '.join(names)}): it needs no input spec.
schema_version: 1
name: {_scalar(model + ' audit')}

system:
  model: {_scalar(model)}   # text zoo name, skops/joblib text pipeline, 'module:callable', or http(s):// URL
  trust_pickle: {str(trust_pickle).lower()}       # pickle/joblib files can run code: only for files you trust
{trusted_line}  text:
    classes: {_list(names)}   # in the model's output order; labels in the data are these names or indices
    text_column: {_scalar(ts.text_column)}        # null: found by name (text, message, ...) or content
    label_column: {_scalar(ts.label_column)}       # null: found by name (label, class, ...) or content
    header: {_scalar(None) if ts.header is None else str(ts.header).lower()}             # null: decided from the file
{http_keys}  data:
    source: {_scalar(data or 'zoo')}   # 'zoo' (SMS messages, zoo models) or .csv / .tsv / .jsonl / .parquet / .txt
    n: {len(texts)}                   # messages audited (the first n of the file)

exposure:
  audience: internal        # internal | public
  output: scores            # the text attacks search by scores; with labels only they are skipped

attacker:
  knowledge: black-box
  query_budget: null        # queries per attacked message (null: by effort, 300 / 1000 / 3000)

effort: standard            # quick | standard | thorough (edit budgets 1-12 characters, attack strength)

gates:                      # CI fails (exit code 6) when one is not met
  - {{metric: clean_accuracy, min: {gate}}}
  - {{metric: text_evasion_rate, max_chars: 3, max: 0.2}}                     # the model as it is
  - {{metric: text_evasion_rate, max_chars: 3, method: normalize, max: 0.1}}  # behind Unicode normalisation

seed: 0
"""
