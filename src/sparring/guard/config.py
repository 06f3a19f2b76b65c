"""``guard.yaml``: the guard service's configuration, validated strictly (an unknown key is refused and named).

::

    model: digits-cnn                 # what load_target takes: a zoo name or a model file (+ spec: spec.json)
    # model: {upstream: "http://10.0.0.5:8000/predict", spec: digits-cnn, score_kind: logits, timeout: 5}
    detectors:
      - {kind: mahalanobis, policy: reject, fit: {data: train}, combine: {data: test, start: 300, eps: 0.2},
         calibrate: {data: test, stop: 300, fpr: 0.01}}
      - {kind: max-softmax, policy: flag, calibrate: {data: test, stop: 300, fpr: 0.05}}
    prada: {delta: 0.9, min_queries: 100, max_samples: 500, max_clients: 10000, policy: log}
    drift: {method: ks-confidence, window: 200, alpha: 0.01, reference: {data: test}}
    store: {url: "sqlite:///guard.db", on_error: fail-closed}
    queue: {max_size: 64}
    rate_limit: {rate: 50, burst: 100}   # per client: requests per second refilled, bucket size
    limits: {max_batch: 256, body_timeout: 10}   # max_body: bytes (default: a full batch in JSON)
    retention: {events_days: 30, alerts_days: 365}

Data references (``data:``) are ``train`` / ``test`` (the served zoo model's own split), ``<zoo-name>:train`` /
``<zoo-name>:test``, or a data file :func:`sparring.data.files.load_data` reads (``.npz`` with ``x`` and ``y``,
CSV, an image folder); ``start``/``stop`` take a slice of it. Relative paths are read from the config file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sparring.errors import GuardConfigError

__all__ = ["DashboardConfig", "DataRef", "DetectorConfig", "GuardConfig", "WebhookConfig", "load_config",
           "parse_config"]

Policy = Literal["log", "flag", "reject"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataRef(_Strict):
    """Inputs (and labels) named by ``data:``; ``start``/``stop`` slice them."""

    data: str
    start: int = Field(0, ge=0)
    stop: int | None = Field(None, ge=1)


class CalibrateRef(DataRef):
    """Clean inputs to set a detector's threshold at false-positive rate ``fpr``."""

    fpr: float = Field(0.01, gt=0, lt=1)


class CombineRef(DataRef):
    """Mahalanobis layer combination (Lee et al. 2018, sec. 3): a logistic regression over the per-layer scores,
    fitted on these clean inputs and their FGSM adversarial examples at L∞ ``eps`` made at start-up."""

    eps: float = Field(0.2, gt=0)


class ModelConfig(_Strict):
    """A model served in-process (``source`` as ``load_target`` takes it) or an upstream prediction API."""

    source: str | None = None
    upstream: str | None = None
    spec: str | None = None  # a spec.json file or a zoo name whose spec the model (or upstream API) has
    score_kind: Literal["probabilities", "logits"] = "probabilities"
    timeout: float = Field(10.0, gt=0)
    entry_point: str | None = None
    trust_pickle: bool = False
    kind: Literal["tensor", "text"] | None = None  # text: a text classifier (default for text zoo names)
    classes: list[str] | None = None  # text models: the class names in output order

    @property
    def is_text(self) -> bool:
        if self.kind is not None:
            return self.kind == "text"
        from sparring.data.text import text_model_names

        return self.source in text_model_names()

    @field_validator("upstream")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("upstream must be an http:// or https:// URL, e.g. http://127.0.0.1:8000/predict")
        return v


class DetectorConfig(_Strict):
    """One adversarial-input detector and what to do when it fires."""

    kind: Literal["mahalanobis", "energy", "max-softmax", "squeezing", "unicode"]  # unicode: text models only
    policy: Policy = "log"
    name: str | None = None  # shown in responses, events and metrics (default: the kind)
    fit: DataRef | None = None  # training data (mahalanobis only)
    combine: CombineRef | None = None  # mahalanobis only: combine all layers (else the last layer alone)
    calibrate: CalibrateRef | None = None
    threshold: float | None = None  # a known threshold instead of calibrate
    normalise: bool = False  # unicode only: the model classifies the normalised text

    @property
    def label(self) -> str:
        return self.name or self.kind


class PradaConfig(_Strict):
    """Per-client extraction detection (Juuti et al. 2019); see :class:`~sparring.defenses.detect.PradaDetector`."""

    enabled: bool = True
    delta: float = Field(0.9, gt=0, lt=1)
    min_queries: int = Field(100, ge=3)
    max_samples: int = Field(500, ge=3)
    max_clients: int = Field(10_000, ge=1)
    policy: Literal["log", "reject"] = "log"  # reject: a flagged client's later requests get 403


class DriftConfig(_Strict):
    """A drift window on the served model's confidence (max probability)."""

    enabled: bool = True
    method: Literal["ks-confidence"] = "ks-confidence"
    window: int = Field(200, ge=10)
    alpha: float = Field(0.01, gt=0, lt=1)
    reference: DataRef | None = None  # clean inputs whose confidences are the reference (default: the calibration)


class StoreConfig(_Strict):
    url: str = "sqlite:///guard.db"
    on_error: Literal["fail-closed", "fail-open"] = "fail-closed"

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("store.url must be sqlite:///path/to/guard.db or postgresql://user@host:port/db")
        return v


class QueueConfig(_Strict):
    max_size: int = Field(64, ge=1)
    retry_after: int = Field(1, ge=1)


class RateLimitConfig(_Strict):
    rate: float = Field(50.0, gt=0)  # requests per second, per client
    burst: int = Field(100, ge=1)


class LimitsConfig(_Strict):
    # bytes; default: what a full max_batch of the model's inputs takes in JSON (at least 4 MiB, at most 64 MiB;
    # beyond, start-up logs which limit to change). sparring.guard.app.json_body_bytes gives the figure.
    max_body: int | None = Field(None, ge=64)
    max_batch: int = Field(256, ge=1)
    body_timeout: float = Field(10.0, gt=0)
    max_text_chars: int = Field(10_000, ge=1)  # text models: characters per message


class RetentionConfig(_Strict):
    events_days: float | None = Field(30.0, gt=0)
    alerts_days: float | None = Field(365.0, gt=0)


class AuthConfig(_Strict):
    cache_seconds: float = Field(5.0, ge=0)  # a verified key is trusted this long before its hash is checked again


class WebhookConfig(_Strict):
    """An alert webhook (:mod:`sparring.guard.webhooks`): committed alerts of ``kinds`` POSTed as JSON to ``url``,
    signed with HMAC-SHA256 under the secret in the environment variable ``secret_env``."""

    url: str
    kinds: list[Literal["prada", "detector-rate", "drift"]] = []  # empty: every kind
    secret_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout: float = Field(5.0, gt=0, le=60)
    retries: int = Field(5, ge=0, le=20)
    backoff: float = Field(1.0, gt=0)  # seconds before the first retry, doubled each time
    max_backoff: float = Field(300.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("a webhook url must be http://... or https://...")
        return v


class DashboardConfig(_Strict):
    """``GET /admin/dashboard`` (:mod:`sparring.guard.dashboard`)."""

    rejected_samples: int = Field(50, ge=0, le=10_000)  # rejected inputs kept to show (0: none are kept)
    session_hours: float = Field(8.0, gt=0, le=168)  # lifetime of the browser session cookie


class GuardConfig(_Strict):
    """The whole ``guard.yaml``. ``base_dir`` (not a key) is the folder relative paths are read from."""

    model: ModelConfig
    detectors: list[DetectorConfig] = []
    prada: PradaConfig = PradaConfig()
    drift: DriftConfig = DriftConfig()
    store: StoreConfig = StoreConfig()
    queue: QueueConfig = QueueConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    limits: LimitsConfig = LimitsConfig()
    retention: RetentionConfig = RetentionConfig()
    auth: AuthConfig = AuthConfig()
    webhooks: list[WebhookConfig] = []
    dashboard: DashboardConfig = DashboardConfig()
    output: Literal["scores", "labels"] = "scores"
    base_dir: str = Field(".", exclude=True)

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def public(self) -> dict[str, Any]:
        """The configuration as JSON (for ``GET /admin/config``; it holds no keys or passwords in store URLs)."""
        d = self.model_dump(mode="json")
        d["store"]["url"] = _redact_url(self.store.url)
        for w in d["webhooks"]:  # a webhook URL's path or query is often its credential (Slack, Teams)
            scheme, rest = w["url"].split("://", 1)
            w["url"] = f"{scheme}://{rest.split('/', 1)[0].rsplit('@', 1)[-1]}/***"
        return d


def _redact_url(url: str) -> str:
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.split("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url


def parse_config(data: Any, *, source: str = "guard.yaml", base_dir: str | Path = ".") -> GuardConfig:
    """Validate a configuration given as a mapping; ``model: name`` is short for ``model: {source: name}``."""
    if not isinstance(data, dict):
        raise GuardConfigError(f"{source}: expected a mapping of keys (model:, detectors:, store: ...); got "
                               f"{type(data).__name__}.")
    data = dict(data)
    if isinstance(data.get("model"), str):
        data["model"] = {"source": data["model"]}
    if "base_dir" in data:
        raise GuardConfigError(f"{source}: base_dir: unknown key; relative paths are read from the file's folder.")
    try:
        cfg = GuardConfig.model_validate({**data, "base_dir": str(base_dir)})
    except ValidationError as exc:
        raise GuardConfigError(_explain(exc, source)) from None
    m = cfg.model
    if (m.source is None) == (m.upstream is None):
        raise GuardConfigError(f"{source}: model: give exactly one of source (a zoo name or model file) and "
                               "upstream (a prediction API URL).")
    if m.upstream is not None and m.spec is None:
        raise GuardConfigError(f"{source}: model.spec is required with upstream: a spec.json file or the zoo name "
                               "of the model the API serves.")
    if m.is_text:
        _check_text(cfg, source)
    for i, d in enumerate(cfg.detectors):
        if (d.kind == "unicode") != m.is_text:
            raise GuardConfigError(f"{source}: detectors.{i} ({d.label}): " + (
                "unicode is a text detector; the model is not a text model (set model.kind: text for one)."
                if d.kind == "unicode" else f"{d.kind} needs a tensor model; for a text model use kind: unicode."))
        if d.kind != "unicode" and d.normalise:
            raise GuardConfigError(f"{source}: detectors.{i} ({d.label}): only unicode takes normalise:; drop it.")
        if d.kind == "unicode":
            if d.calibrate is not None:
                raise GuardConfigError(f"{source}: detectors.{i} ({d.label}): unicode counts evasion characters; "
                                       "give threshold: (default 0: one such character fires) instead of calibrate:.")
            continue
        if d.calibrate is None and d.threshold is None:
            raise GuardConfigError(f"{source}: detectors.{i} ({d.label}): give calibrate: {{data: ..., fpr: ...}} "
                                   "or threshold:.")
        if d.kind == "mahalanobis" and d.fit is None:
            raise GuardConfigError(f"{source}: detectors.{i} ({d.label}): mahalanobis needs fit: {{data: train}} "
                                   "(the class means and covariance come from training data).")
        if d.kind != "mahalanobis" and (d.fit is not None or d.combine is not None):
            raise GuardConfigError(f"{source}: detectors.{i}: only mahalanobis takes fit: and combine:; drop them.")
    labels = [d.label for d in cfg.detectors]
    if len(set(labels)) != len(labels):
        raise GuardConfigError(f"{source}: detectors: names must be unique; got {labels}. Set name: on each.")
    return cfg


def _check_text(cfg: GuardConfig, source: str) -> None:
    m = cfg.model
    if m.upstream is not None:
        raise GuardConfigError(f"{source}: model: a text model is served in-process (source:); proxying an upstream "
                               "text API is not supported yet.")
    if m.spec is not None or m.entry_point is not None:
        raise GuardConfigError(f"{source}: model: a text model takes no spec: or entry_point: (give "
                               "source: module:callable for a callable); drop them.")
    if cfg.output != "scores":
        raise GuardConfigError(f"{source}: output: a text model answers scores, as HttpTextTarget reads; drop it.")
    if len([d for d in cfg.detectors if d.normalise]) > 1:
        raise GuardConfigError(f"{source}: detectors: normalise: true on one unicode detector at most.")


def load_config(path: str | Path) -> GuardConfig:
    """Read and validate a ``guard.yaml`` file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise GuardConfigError(f"no such guard config file: {str(p)!r}. See docs/guard.md for an example.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise GuardConfigError(f"{p} is not valid YAML{where}: {getattr(exc, 'problem', exc)}.") from None
    except UnicodeDecodeError as exc:
        raise GuardConfigError(f"{p} is not UTF-8 text: {exc}.") from None
    return parse_config(data, source=str(p), base_dir=p.parent)


def _explain(exc: ValidationError, source: str) -> str:
    lines = [f"{source} is invalid ({exc.error_count()} problem{'s' if exc.error_count() > 1 else ''}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {loc}: unknown key; allowed keys here: {_allowed(err['loc'][:-1])}")
        elif err["type"] == "missing":
            lines.append(f"  - {loc}: required key is missing")
        else:
            lines.append(f"  - {loc}: got {err.get('input')!r}; {msg}")
    return "\n".join(lines)


def _allowed(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = GuardConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        inner = [a for a in (ann, *getattr(ann, "__args__", ())) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not inner:
            return "see docs/guard.md"
        model = inner[0]
    return ", ".join(k for k in model.model_fields if k != "base_dir")
