"""``sparring init``: an annotated threat-model template, pre-filled from a model and its data."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sparring.audit.threat import HttpSettings
from sparring.targets.spec import Access, InputSpec

__all__ = ["threat_model_template"]


def _nice(v: float) -> float:
    """Round to 2 significant digits (budgets in a template should read like a person wrote them)."""
    if v <= 0:
        return v
    digits = 1 - math.floor(math.log10(v))
    return round(v, digits)


def _widths(spec: InputSpec) -> tuple[float, float]:
    lo, hi = spec.bounds_tensors(dtype=torch.float64)
    w = (hi - lo).reshape(-1)
    return float(w.min()), float(w.max())


def _yaml(v: str | None) -> str:
    return "null" if v is None else repr(v)


def _per_feature(spec: InputSpec) -> bool:
    """Flat features whose ranges differ (tabular data): one raw budget cannot fit them all."""
    if spec.layout != "features" or len(spec.shape) != 1:
        return False
    lo, hi = spec.bounds_tensors(dtype=torch.float64)
    w = (hi - lo).reshape(-1)
    return w.numel() > 1 and float(w.max() / w.min()) > 1.5


def threat_model_template(model: str, *, data: str | None = None, spec: str | None = None,
                          entry_point: str | None = None, n: int = 200, device: str = "cpu",
                          trust_pickle: bool = False, trusted_types: Sequence[str] = (),
                          path: str = "threat.yaml", classes: Sequence[str] | None = None,
                          text_column: str | None = None, label_column: str | None = None,
                          http: Mapping[str, Any] | None = None, exposure: str | None = None) -> str:
    """Load ``model`` (and ``data``), measure its clean accuracy, and return an annotated YAML threat model.

    Budgets are scaled to the input: on flat features with different ranges (tabular data) they are fractions of
    each feature's range (``system.units: range``, :mod:`sparring.targets.units`), else raw units scaled to the
    range and dimension. The clean-accuracy gate is set just under the accuracy measured now, so a regression fails
    CI; ``n`` is capped at the rows the data has. ``path`` is where the file will be written (for the header's
    command). Every value is a starting point to edit. A text model (``classes``, ``text_column``,
    ``label_column``, ``http`` settings) gets the text template of :mod:`sparring.audit.template_text`. A tensor
    endpoint (an ``http(s)://`` model with ``spec``) gets ``system.http`` from ``http`` (headers as given, so
    ``${VAR}`` stays a reference to the environment) and ``exposure.output`` from ``exposure`` (``labels`` for an
    API that answers labels only).
    """
    from sparring.audit.model_kinds import _data, _load
    from sparring.audit.template_text import text_threat_model_template
    from sparring.audit.threat import parse_threat_model

    if spec is None and entry_point is None:
        text = text_threat_model_template(model, data=data, n=n, trust_pickle=trust_pickle,
                                          trusted_types=trusted_types, classes=classes, text_column=text_column,
                                          label_column=label_column, path=path, http=http)
        if text is not None:
            if exposure is not None:
                from sparring.errors import ParameterError

                raise ParameterError("--exposure describes a tensor API (a URL --model with --spec); a text model "
                                     "answers scores for its classes: drop --exposure.")
            return text

    draft: dict[str, Any] = {"system": {"model": model, "spec": spec, "entry_point": entry_point, "device": device,
                                        "trust_pickle": trust_pickle, "trusted_types": list(trusted_types),
                                        "data": {"source": data or "zoo", "n": n}}}
    url = model.startswith(("http://", "https://"))
    settings = {k: v for k, v in (http or {}).items() if v not in (None, {}, ())}
    if url and settings:
        draft["system"]["http"] = settings
    if exposure is not None:
        draft["exposure"] = {"output": exposure}
    tm = parse_threat_model(draft, source="sparring init")
    target = _load(tm, {})
    try:
        x, y = _data(tm, target)
        n = min(n, int(x.shape[0]))
        acc = float((target.query_labels(x).cpu() == y.cpu()).float().mean())
    finally:
        close = getattr(target, "close", None)  # an HttpTarget's connection pool
        if callable(close):
            close()
    d = target.spec.n_features
    per_feature = _per_feature(target.spec)
    width = 1.0 if per_feature else target.spec.range_width
    linf = [_nice(f * width) for f in (0.01, 0.03, 0.1)]
    l2 = [_nice(f * width * math.sqrt(d)) for f in (0.01, 0.03, 0.1)]
    units = "range" if per_feature else "raw"
    if per_feature:
        measured = (f"{d} features with ranges from {_nice(_widths(target.spec)[0]):g} to "
                    f"{_nice(_widths(target.spec)[1]):g}, so budgets are fractions of each feature's range")
        budget_note = "fractions of each feature's range (system.units: range; 1 = the whole range)"
    else:
        measured = f"input range width {width:g}, {d} features"
        budget_note = f"in raw input units ({width:g} = the whole range)"
    trusted = "[" + ", ".join(repr(t) for t in trusted_types) + "]"
    knowledge = "white-box" if target.access >= Access.GRADIENTS else "black-box"
    output = "labels" if target.access == Access.LABELS else "scores"
    gate = max(0.0, math.floor((acc - 0.02) * 100) / 100)
    http_block = ""
    if url:
        from sparring.audit.template_text import _mapping, _scalar

        h = tm.system.http or HttpSettings()
        http_block = f"""  http:                     # how to talk to the endpoint
    headers: {_mapping(h.headers)}   # e.g. {{Authorization: "Bearer ${{API_TOKEN}}"}} (${{VAR}}: from the environment)
    timeout: {h.timeout:g}              # seconds per request
    retries: {h.retries}
    input_key: {_scalar(h.input_key)}       # request key of the batch: POST {{input_key: [...]}}
    output_key: {_scalar(h.output_key)}        # answer key of the predictions (null: scores, or labels)
    output: {h.output}      # what the scores are: probabilities | logits
"""
    return f"""# sparring threat model (schema version 1). Written by `sparring init`; edit, then run:
#   sparring audit {path} --out sparring-report
# Measured now: clean accuracy {acc:.4f} on {x.shape[0]} examples; {measured}.
schema_version: 1
name: {model} audit

system:
  model: {model}              # zoo name, model file (TorchScript, .pt2, ONNX, skops, state dict), or http(s):// URL
  spec: {_yaml(spec)}               # InputSpec JSON (needed for model files and URLs)
  entry_point: {_yaml(entry_point)}        # 'package.module:build_fn' for a state-dict file
  trust_pickle: {str(trust_pickle).lower()}       # pickle/joblib files can run code: only for files you trust
  trusted_types: {trusted}         # skops types to trust, e.g. ['sklearn.tree._tree.Tree'] for forests
  units: {units}               # budget units: raw | range (fraction of each feature's range) | std | scale.json
  device: {device}
{http_block}  data:
    source: {data or 'zoo'}            # 'zoo' (the zoo model's data) or a .npz / .csv / image folder
    split: test
    n: {n}                    # examples audited (more = tighter estimates, longer runs)

exposure:
  audience: internal        # internal | public
  output: {output}            # what the API returns: scores | top-k | labels
  top_k: null               # with output: top-k, how many classes are revealed
  decimals: null            # rounding of returned probabilities, if any

attacker:
  knowledge: {knowledge}       # white-box (has the model) | grey-box | black-box (queries the API only)
  evasion:                  # budgets {budget_note}
    - {{norm: linf, eps: {linf}}}
    - {{norm: l2, eps: {l2}}}
  query_budget: null        # queries per example for black-box attacks (null: by effort)
  poisoning_share: null     # share of training data an attacker controls: set it to scan data and model for backdoors
  physical_access: false

assets:
  training_data_privacy: false   # true: membership inference (loss threshold, LiRA) on zoo models
  model_ip: false                # true: steal a surrogate through the API within the query budget

certification:              # guarantees, not attacks (remove what you do not need)
  bounds: null              # e.g. {{eps: [{linf[0]}]}}: L∞ bound propagation, for supported torch models
  smoothing: null           # e.g. {{sigma: 0.25, n: 1000, alpha: 0.001, radii: [0.25, 0.5]}}

defence: null               # a layered defence, attacked adaptively layer by layer, e.g.
                            #   {{preprocess: [{{name: bit-depth, bits: 3}}],
                            #    detector: {{kind: mahalanobis, fpr: 0.05}}, robust_model: digits-cnn-pgdat}}

effort: standard            # quick | standard | thorough (attack strength and time)

gates:                      # CI fails (exit code 6) when one is not met
  - {{metric: clean_accuracy, min: {gate}}}
  - {{metric: robust_accuracy, norm: linf, eps: {linf[0]}, min: 0.5}}

seed: 0
"""
