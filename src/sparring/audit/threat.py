"""The threat model: a declarative, versioned description of what is audited and against whom.

A threat model is a YAML file (schema version 1) validated with pydantic. Every key is optional except
``system.model``; :func:`load_threat_model` turns any problem into a :class:`~sparring.errors.ThreatModelError`
that names the key, the value given and the values allowed. ``sparring init`` writes an annotated template.

The keys, in short::

    schema_version: 1
    name: digits classifier
    system:    {model, spec, entry_point, trust_pickle, device, batch_size,
                data: {source, split, n, label_column, x_key, y_key},
                text: {classes, text_column, label_column, header, label, headers, input_key, ...},
                http: {headers, timeout, retries, input_key, output_key, output: probabilities|logits},
                llm: {app | application, defences, converters, max_new_tokens, batch_size, ...}}
    exposure:  {audience: internal|public, output: scores|top-k|labels, top_k, decimals}
    attacker:  {knowledge: white-box|grey-box|black-box, evasion: [{norm, eps: [...]}], query_budget,
                poisoning_share, physical_access}
    assets:    {training_data_privacy, model_ip}
    certification: {bounds: {eps: [...]}, smoothing: {sigma, n0, n, alpha, radii: [...]}}
    defence:   {preprocess: [{name: bit-depth|median|spatial|jpeg|tv, ...}], detector: {kind, fpr},
                robust_model}
    monitoring: {reference, current, key, label_column, tests: [mmd|lsdd|ks|cvm|classifier|bbsd], alpha,
                n_permutations, correction, window}
    effort:    quick|standard|thorough
    gates:     [{metric, min|max|max_drop, norm, eps, radius, method, max_chars}]
    seed: 0
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparring.audit.llm_system import LlmSystem
from sparring.audit.metrics import LLM_METRICS, METRICS
from sparring.audit.text_system import TextSystem
from sparring.errors import ThreatModelError

__all__ = [
    "DRIFT_TESTS",
    "REGRESSION_METRICS",
    "SCHEMA_VERSION",
    "Assets",
    "Attacker",
    "Budget",
    "Certification",
    "DataSource",
    "Defence",
    "Exposure",
    "Gate",
    "HttpSettings",
    "Monitoring",
    "ThreatModel",
    "load_threat_model",
    "parse_threat_model",
]

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSource(_Strict):
    """Where the audited examples come from: ``"zoo"`` (the zoo model's own data) or a data file / image folder."""

    source: str = "zoo"
    split: Literal["test", "train"] = "test"
    n: int = Field(200, ge=1, le=100_000)
    label_column: str = Field("label", min_length=1)
    """The label column of a ``.csv``/``.tsv`` source (every other column is a feature); a text system names its
    columns in ``system.text`` instead."""
    x_key: str = Field("x", min_length=1)
    """The inputs' array name in an ``.npz`` source."""
    y_key: str = Field("y", min_length=1)
    """The labels' array name in an ``.npz`` source."""

    def load_options(self) -> dict[str, str]:
        """The keyword arguments of :func:`sparring.data.files.load_data` for this source's kind."""
        suffix = Path(self.source).suffix.lower()
        if suffix in (".csv", ".tsv"):
            return {"label_column": self.label_column}
        if suffix == ".npz":
            return {"x_key": self.x_key, "y_key": self.y_key}
        return {}


class HttpSettings(_Strict):
    """``system.http``: how to talk to an ``http(s)://`` tensor endpoint (the text API's settings live in
    ``system.text``, with the same keys). Whether the API returns scores or labels is ``exposure.output``."""

    headers: dict[str, str] = Field(default_factory=dict)
    """HTTP headers, e.g. ``{Authorization: "Bearer ${API_TOKEN}"}``; ``$VAR``/``${VAR}`` are read from the environment
    when the audit runs, and header values without a variable are left out of the reports."""
    timeout: float = Field(10.0, gt=0)
    retries: int = Field(3, ge=0)
    input_key: str = Field("inputs", min_length=1)
    output_key: str | None = Field(None, min_length=1)
    """Answer key of the predictions (default ``scores``, or ``labels`` with ``exposure.output: labels``)."""
    output: Literal["probabilities", "logits"] = "probabilities"
    """What the API's scores are."""


class System(_Strict):
    """The model under audit: a zoo name, a model file, or an ``http(s)://`` prediction endpoint."""

    model: str
    spec: str | None = None
    entry_point: str | None = None
    trust_pickle: bool = False
    device: str = "cpu"
    batch_size: int = Field(256, ge=1)
    task: Literal["classification"] = "classification"
    data: DataSource = DataSource()
    constraints: str | None = None
    """Tabular feature constraints (.json/.yaml, see sparring.targets.constraints): enables the tabular checks."""
    text: TextSystem | None = None
    """A text model's classes, message columns and HTTP settings (see sparring.audit.text_system); no spec."""
    http: HttpSettings | None = None
    """Headers, timeout, retries, request/answer keys and score kind of an ``http(s)://`` tensor endpoint."""
    llm: LlmSystem | None = None
    """An LLM application (see sparring.audit.llm_system): ``model`` is then the chat model (a bundled name, a .gguf
    file, a transformers folder or an OpenAI-compatible ``http(s)://`` API)."""
    trusted_types: list[str] = Field(default_factory=list)
    """Types to trust in a skops file beyond skops' defaults, e.g. ``sklearn.tree._tree.Tree`` for forests."""
    units: str = "raw"
    """Units of every evasion budget (and certification radius) on flat tabular features: ``raw`` (the inputs' own
    units), ``range`` (a fraction of each feature's range), ``std`` (each feature's standard deviation over the audit
    data) or a JSON scale file (one unit per feature); see sparring.targets.units and sparring.audit.units."""

    @model_validator(mode="after")
    def _http_for_urls(self) -> System:
        if self.http is not None and not self.model.startswith(("http://", "https://")):
            raise ValueError(f"system.http applies to an http(s):// model only; system.model is {self.model!r}: give "
                             "the endpoint's URL or drop system.http")
        if self.http is not None and self.text is not None:
            raise ValueError("a text API takes its HTTP settings in system.text (headers, timeout, input_key, ...); "
                             "drop system.http")
        if self.llm is not None:
            extra = [k for k in ("spec", "text", "http", "constraints", "entry_point") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"system.llm describes an LLM application, which takes no {', '.join(extra)}: drop "
                                 f"{'them' if len(extra) > 1 else 'it'} (an API's settings go in system.llm)")
        return self

    @field_validator("units")
    @classmethod
    def _units(cls, v: str) -> str:
        if v not in ("raw", "range", "std") and not v.lower().endswith(".json"):
            raise ValueError(f"units must be raw, range, std or the path of a .json scale file; got {v!r}")
        return v


class Exposure(_Strict):
    """Who can query the model and what its API returns."""

    audience: Literal["internal", "public"] = "internal"
    output: Literal["scores", "top-k", "labels"] = "scores"
    top_k: int | None = Field(None, ge=1)
    decimals: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _top_k_given(self) -> Exposure:
        if self.output == "top-k" and self.top_k is None:
            raise ValueError("output 'top-k' needs top_k (how many classes the API reveals), e.g. top_k: 3")
        return self


class Budget(_Strict):
    """Evasion budgets for one norm, in raw input space (e.g. 0.1 on 0-1 pixels)."""

    norm: Literal["linf", "l2"]
    eps: list[float] = Field(min_length=1)

    @field_validator("eps")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        bad = [e for e in v if not e > 0 or e != e or e == float("inf")]
        if bad:
            raise ValueError(f"every eps must be a finite number > 0; got {bad}")
        return sorted(set(v))


class Attacker(_Strict):
    """What the attacker knows and can do."""

    knowledge: Literal["white-box", "grey-box", "black-box"] = "white-box"
    evasion: list[Budget] = Field(default_factory=list)
    query_budget: int | None = Field(None, ge=1, description="queries per example for black-box attacks")
    poisoning_share: float | None = Field(None, ge=0, le=1)
    physical_access: bool = False


class Assets(_Strict):
    """What must be protected besides correct predictions."""

    training_data_privacy: bool = False
    model_ip: bool = False


class BoundsCert(_Strict):
    eps: list[float] = Field(min_length=1)
    method: Literal["best", "ibp", "crown"] = "best"


class SmoothingCert(_Strict):
    sigma: float = Field(0.25, gt=0)
    n0: int = Field(100, ge=1)
    n: int = Field(1000, ge=1)
    alpha: float = Field(0.001, gt=0, lt=1)
    radii: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])


class Certification(_Strict):
    """Certified robustness to compute: bound propagation (L∞) and/or randomized smoothing (L2)."""

    bounds: BoundsCert | None = None
    smoothing: SmoothingCert | None = None


class BitDepthStep(_Strict):
    """Bit-depth reduction to ``bits`` bits per pixel (feature squeezing)."""

    name: Literal["bit-depth"]
    bits: int = Field(3, ge=1, le=16)


class MedianStep(_Strict):
    """Median smoothing over a ``kernel`` x ``kernel`` window (feature squeezing; kernel 2-7)."""

    name: Literal["median"]
    kernel: int = Field(2, ge=2, le=7)


class SpatialStep(_Strict):
    """A median or mean window filter (kernel 2-15)."""

    name: Literal["spatial"]
    kernel: int = Field(3, ge=2, le=15)
    mode: Literal["median", "mean"] = "median"


class JpegStep(_Strict):
    """JPEG compression at ``quality`` (1-100)."""

    name: Literal["jpeg"]
    quality: int = Field(75, ge=1, le=100)


class TvStep(_Strict):
    """Total-variation minimisation (``weight`` > 0, ``steps`` iterations)."""

    name: Literal["tv"]
    weight: float = Field(0.05, gt=0)
    steps: int = Field(30, ge=1, le=10_000)


PreprocessStep = Annotated[BitDepthStep | MedianStep | SpatialStep | JpegStep | TvStep, Field(discriminator="name")]


class DetectorSpec(_Strict):
    """An adversarial-input detector in front of the model, its threshold set for ``fpr`` false positives."""

    kind: Literal["mahalanobis", "energy", "max-softmax"]
    fpr: float = Field(0.05, gt=0, lt=1)


class Defence(_Strict):
    """A layered defence around the audited model, evaluated layer by layer (``layered-defence`` check).

    ``robust_model`` (a zoo name or model file, same spec) replaces the audited model as the defended system's
    classifier; the audited model is then the undefended baseline row.
    """

    preprocess: list[PreprocessStep] = Field(default_factory=list)
    detector: DetectorSpec | None = None
    robust_model: str | None = None

    @model_validator(mode="after")
    def _some_layer(self) -> Defence:
        if not self.preprocess and self.detector is None and self.robust_model is None:
            raise ValueError("a defence needs at least one layer: preprocess, detector or robust_model, e.g. "
                             "detector: {kind: mahalanobis, fpr: 0.05}")
        return self


DriftTest = Literal["mmd", "lsdd", "ks", "cvm", "classifier", "bbsd"]
DRIFT_TESTS: tuple[str, ...] = get_args(DriftTest)
"""The tests ``monitoring.tests`` may name (``bbsd``: KS on the audited model's softmax outputs, needs scores)."""


class Monitoring(_Strict):
    """Monitoring data: is what the deployed model sees now still drawn like its reference data? (``drift`` check.)

    ``reference`` is data the model was built and validated on, ``current`` what it receives now (``.npz`` with
    array ``key``, ``.csv``/``.tsv`` with a header row, or ``.txt`` with one text per line; relative paths start at
    the working directory). Every test in ``tests`` runs at level ``alpha``; the gate metric ``drift_p_value`` is
    the smallest p-value Bonferroni-corrected over the tests, ``drift_detected`` is 1 when it is below ``alpha``.
    ``window`` also tests each run of that many consecutive current rows (shown in the report, not gated).
    """

    reference: str
    current: str
    key: str | None = None
    label_column: str = "label"
    tests: list[DriftTest] = Field(default_factory=lambda: list[DriftTest](["mmd", "ks"]), min_length=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    n_permutations: int = Field(500, ge=20, le=100_000)
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    window: int | None = Field(None, ge=2)

    @field_validator("tests")
    @classmethod
    def _distinct(cls, v: list[DriftTest]) -> list[DriftTest]:
        if len(set(v)) != len(v):
            raise ValueError(f"each test once; got {v}")
        return v


REGRESSION_METRICS = ("clean_accuracy", "robust_accuracy", "certified_accuracy")
"""The metrics a regression gate (``max_drop``) may watch: accuracies, where larger is better."""


class Gate(_Strict):
    """A pass/fail condition on one measured metric, e.g. robust accuracy at L∞ 0.1 ≥ 0.6.

    A gate is absolute (``min`` or ``max``) or a *regression gate* (``max_drop``): the metric may not fall by more
    than ``max_drop`` below its value in the baseline report (``sparring audit --baseline old/report.json``, see
    :mod:`sparring.audit.baseline`). A regression gate without a baseline value is unmeasured and fails.
    """

    metric: str
    min: float | None = None
    max: float | None = None
    norm: Literal["linf", "l2"] | None = None
    eps: float | None = Field(None, gt=0)
    radius: float | None = Field(None, ge=0)
    method: str | None = None
    max_chars: int | None = Field(None, ge=1)
    max_drop: float | None = Field(None, ge=0, le=1)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; allowed: {', '.join(sorted(METRICS))}")
        return v

    @model_validator(mode="after")
    def _complete(self) -> Gate:
        if sum(v is not None for v in (self.min, self.max, self.max_drop)) != 1:
            raise ValueError("a gate needs exactly one of min, max or max_drop, e.g. min: 0.6 (absolute) or "
                             "max_drop: 0.02 (at most 0.02 below the --baseline report); write two gates for both")
        if self.max_drop is not None and self.metric not in REGRESSION_METRICS:
            raise ValueError(f"max_drop (a regression gate) watches an accuracy ({', '.join(REGRESSION_METRICS)}); "
                             f"got metric {self.metric!r}")
        needs = list(METRICS[self.metric].params)
        if self.metric == "certified_accuracy":
            needs.append("eps" if self.norm == "linf" else "radius")
        for key in needs:
            if getattr(self, key) is None:
                raise ValueError(f"metric {self.metric!r} needs {key!r} (e.g. {METRICS[self.metric].example})")
        if self.metric in ("drift_p_value", "drift_detected") and self.method not in (None, *DRIFT_TESTS):
            raise ValueError(f"{self.metric}'s method is one monitoring test ({', '.join(DRIFT_TESTS)}) or left out "
                             f"(all of monitoring.tests, Bonferroni-corrected); got {self.method!r}")
        if self.metric in LLM_METRICS and self.method is not None and not self.method.strip():
            raise ValueError(f"{self.metric}'s method is a defence configuration (none, all, or a defence name); "
                             f"got {self.method!r}")
        if self.metric == "text_evasion_rate" and self.method not in (None, "none", "normalize"):
            raise ValueError(f"text_evasion_rate's method is the defence: none or normalize; got {self.method!r}")
        return self

    def key(self) -> str:
        """What the gate measures, without its threshold: the metric and its parameters, e.g.
        ``robust_accuracy (norm=linf, eps=0.1)``. A baseline's gates are matched by this key."""
        where = ", ".join(f"{k}={getattr(self, k)}" for k in ("norm", "eps", "radius", "method", "max_chars")
                          if getattr(self, k))
        return f"{self.metric}{f' ({where})' if where else ''}"

    def describe(self) -> str:
        if self.max_drop is not None:
            return f"{self.key()} drop <= {self.max_drop} vs baseline"
        op, value = (">=", self.min) if self.min is not None else ("<=", self.max)
        return f"{self.key()} {op} {value}"

    def passes(self, value: float, before: float | None = None) -> bool:
        """Whether ``value`` meets the gate; a regression gate compares with ``before`` (its baseline value) and
        fails without one. A drop of exactly ``max_drop`` is allowed (float rounding aside)."""
        if self.max_drop is not None:
            return before is not None and value >= before - self.max_drop - 1e-9
        return value >= self.min if self.min is not None else value <= (self.max if self.max is not None else 0.0)


class ThreatModel(_Strict):
    """A validated threat model (see the module docstring for the keys)."""

    schema_version: Literal[1] = 1
    name: str = "audit"
    system: System
    exposure: Exposure = Exposure()
    attacker: Attacker = Attacker()
    assets: Assets = Assets()
    certification: Certification = Certification()
    defence: Defence | None = None
    monitoring: Monitoring | None = None
    effort: Literal["quick", "standard", "thorough"] = "standard"
    gates: list[Gate] = Field(default_factory=list)
    seed: int = 0

    @model_validator(mode="after")
    def _llm_gates_have_an_application(self) -> ThreatModel:
        llm = [g.metric for g in self.gates if g.metric in LLM_METRICS]
        if llm and self.system.llm is None:
            raise ValueError(f"gates on {', '.join(sorted(set(llm)))} measure an LLM application: add system.llm: "
                             "{app: app.yaml} (system.model is then the chat model)")
        if self.system.llm is not None:
            other = [g.metric for g in self.gates if g.metric not in LLM_METRICS]
            if other:
                raise ValueError(f"an LLM application is gated on its attack success rates ({', '.join(LLM_METRICS)}"
                                 f"); {', '.join(sorted(set(other)))} cannot be measured on it")
        return self

    @model_validator(mode="after")
    def _drift_gates_have_data(self) -> ThreatModel:
        if self.monitoring is None and any(g.metric.startswith("drift_") for g in self.gates):
            raise ValueError("drift gates (drift_p_value, drift_detected) test monitoring data: add monitoring: "
                             "{reference: reference.npz, current: current.npz}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The threat model as written into reports: ``system.http`` header values that hold a literal (no
        ``$VAR``) are replaced by ``<redacted>``, so a token typed into the YAML stays out of the reports."""
        out = self.model_dump(mode="json")
        http = out["system"].get("http")
        if http:
            http["headers"] = {k: v if "$" in v else "<redacted>" for k, v in http["headers"].items()}
        inline = (out["system"].get("llm") or {}).get("application")
        if inline and isinstance(inline.get("secret"), str | int):  # the planted secret stays out of the reports
            secret = str(inline["secret"])
            inline.update({k: v.replace(secret, "<redacted>") for k, v in inline.items() if isinstance(v, str)})
            inline["secret"] = "<redacted>"
        return out

    def spec_hash(self) -> str:
        """SHA-256 of the canonical JSON form: identical threat models hash identically, whatever the YAML layout.

        Keys at their default value are left out, so a threat model hashes the same whether it spells a default out
        or not, and a later sparring that adds an optional key keeps the hashes (and resumable checkpoints) of
        existing threat models.
        """
        text = json.dumps(self.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def budgets(self) -> list[tuple[str, float]]:
        """Every (norm, eps) the audit must measure: those declared plus those that gates refer to."""
        out = {(b.norm, float(e)) for b in self.attacker.evasion for e in b.eps}
        out |= {(g.norm, float(g.eps)) for g in self.gates
                if g.metric == "robust_accuracy" and g.norm is not None and g.eps is not None}
        return sorted(out)


def parse_threat_model(data: Any, *, source: str = "threat model") -> ThreatModel:
    """Validate a threat model given as a mapping (parsed YAML/JSON)."""
    if not isinstance(data, dict):
        raise ThreatModelError(
            f"{source}: expected a mapping of keys (system:, attacker:, gates: ...); got {type(data).__name__}."
        )
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ThreatModelError(
            f"{source}: schema_version {version!r} is not supported by this sparring (it reads {SCHEMA_VERSION})."
        )
    try:
        return ThreatModel.model_validate(data)
    except ValidationError as exc:
        raise ThreatModelError(_explain(exc, source)) from None


def load_threat_model(path: str | Path) -> ThreatModel:
    """Read and validate a threat model YAML (or JSON) file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ThreatModelError(f"no such threat model file: {str(p)!r}. Write one with `sparring init`.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ThreatModelError(f"{p} is not valid YAML{where}: {getattr(exc, 'problem', exc)}.") from None
    except UnicodeDecodeError as exc:
        raise ThreatModelError(f"{p} is not UTF-8 text: {exc}.") from None
    return parse_threat_model(data, source=str(p))


def _explain(exc: ValidationError, source: str) -> str:
    lines = [f"{source} is invalid ({exc.error_count()} problem{'s' if exc.error_count() > 1 else ''}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = _model_at(err["loc"][:-1])
            allowed = ", ".join(parent.model_fields) if parent is not None else "see the documentation"
            lines.append(f"  - {loc}: unknown key; allowed keys here: {allowed}")
            continue
        if err["type"] == "missing":
            lines.append(f"  - {loc}: required key is missing")
            continue
        lines.append(f"  - {loc}: got {err.get('input')!r}; {msg}")
    return "\n".join(lines)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = ThreatModel
    union: list[type[BaseModel]] = []  # members of a tagged union (defence.preprocess): the next part is the tag
    for part in loc:
        if isinstance(part, int):
            continue
        tagged = [m for m in union if "name" in m.model_fields
                  and part in get_args(m.model_fields["name"].annotation)]
        union = []
        if tagged:
            model = tagged[0]
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        inner = _models_in(field.annotation)
        if not inner:
            return None
        model, union = inner[0], inner if len(inner) > 1 else []
    return model


def _models_in(ann: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (through ``X | None``, ``list[...]``, ``Annotated[...]``)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for a in get_args(ann) for m in _models_in(a)]
