"""Text systems in a threat model: ``system.text`` and loading a user's text model and messages for an audit.

A text system needs no InputSpec: it declares its classes, and where its messages' text and labels are::

    system:
      model: tox.skops                  # or a text zoo name, 'module:callable', an http(s):// moderation API
      text:
        classes: [ok, threat, toxic]    # in the model's output order (a pipeline fitted on names declares them)
        text_column: message
        label_column: label
      data: {source: tox.csv, n: 200}   # .csv/.tsv/.jsonl/.parquet/text; 'zoo' for the SMS zoo models

``system.text`` is optional for text zoo models and for skops/joblib files holding a text pipeline (found by trying
one string on it); a URL needs either ``system.text`` (a text API) or ``system.spec`` (a tensor API).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from sparring.errors import DataLoadError, LabelError, ModelLoadError, ParameterError

if TYPE_CHECKING:
    import torch

__all__ = ["TextSystem", "load_text_system", "wants_text"]


class TextSystem(BaseModel):
    """``system.text``: the classes of a text model, the columns of its messages file, its HTTP settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    classes: list[str] | None = Field(None, min_length=2)
    text_column: str | None = None
    label_column: str | None = None
    header: bool | None = None
    label: str | None = None
    """The class of every message of an unlabelled file."""
    output: Literal["probabilities", "logits"] | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    """HTTP headers; ``${VAR}`` is read from the environment. In JSON form (reports, the spec hash) a value that
    holds a literal (no ``$VAR``) is ``<redacted>``, as in ``system.http``: a token typed into the YAML stays out
    of report.json and report.html; the target is built from the values as given."""
    timeout: float = Field(10.0, gt=0)
    retries: int = Field(3, ge=0)
    input_key: str = "inputs"
    output_key: str = "scores"

    @field_serializer("headers", when_used="json")
    def _redact(self, headers: dict[str, str]) -> dict[str, str]:
        return {k: v if "$" in v else "<redacted>" for k, v in headers.items()}

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (len(set(v)) != len(v) or any(not str(c).strip() for c in v)):
            raise ValueError(f"classes must be distinct, non-empty names in the model's output order; got {v}")
        return v


def _is_url(model: str) -> bool:
    return model.startswith(("http://", "https://"))


def wants_text(tm: Any) -> bool:
    """Whether ``tm.system`` is a text system (declared, a text zoo name, an entry point, or a text pipeline file).

    Raises:
        ParameterError: a URL that declares neither ``system.text`` nor ``system.spec``.
        ModelLoadError: a skops/joblib file without a spec that cannot be loaded as the threat model allows.
    """
    return _detect(tm)[0]


def _detect(tm: Any) -> tuple[bool, Any]:
    """``(is text, the estimator already loaded to find out, or None)``."""
    from sparring.data.text import text_model_names
    from sparring.targets.text_load import is_entry_point

    s = tm.system
    if getattr(s, "text", None) is not None or s.model in text_model_names():
        return True, None
    if s.spec is not None or s.entry_point is not None:
        return False, None
    if _is_url(s.model):
        raise ParameterError(f"system.model {s.model!r} is a URL: say what it takes. A text API declares its "
                             "classes: system.text: {classes: [ok, toxic]}; a tensor API an input spec: system.spec: "
                             "spec.json (InputSpec.to_dict keys).")
    if is_entry_point(s.model):
        return True, None
    est = _text_pipeline(s)
    return est is not None, est


def _text_pipeline(s: Any) -> Any | None:
    """The estimator in ``s.model`` when it is a skops/joblib file holding a pipeline over raw strings."""
    from sparring.targets.load import detect_kind
    from sparring.targets.text_load import load_text_pipeline, probe_text_estimator

    p = Path(s.model)
    if not p.is_file():
        return None
    try:
        kind = detect_kind(p)
    except ModelLoadError:
        return None
    if kind not in ("skops", "pickle"):
        return None
    est = load_text_pipeline(p, trust_pickle=s.trust_pickle, trusted_types=_trusted(s))
    try:
        probe_text_estimator(est, s.model)
    except ModelLoadError:
        return None  # a tabular model: the tensor path asks for its spec
    return est


def load_text_system(tm: Any, target: Any = None, data: tuple[Any, Any] | None = None
                     ) -> tuple[Any, Any, list[str], torch.Tensor] | None:
    """``(target, attacker view, messages, labels)`` for a text system, ``None`` for any other system.

    ``target``/``data`` replace ``system.model``/``system.data`` (in-memory audits). Messages come from the SMS
    zoo data (``data.source: zoo``, text zoo models) or a file read by
    :func:`sparring.data.text_files.load_text_file` with ``system.text``'s columns; labels are mapped by the
    model's class names.
    """
    from sparring.targets.text import TextTarget, _validate_labels, validate_texts

    s = tm.system
    if target is not None and not isinstance(target, TextTarget):
        return None
    text: TextSystem = getattr(s, "text", None) or TextSystem()
    if target is None:
        is_text, estimator = _detect(tm)
        if not is_text:
            return None
        target = _load_target(s, text) if estimator is None else _from_estimator(estimator, s, text)
    d = s.data
    if data is None:
        data = _messages(s, text, target)
    texts = validate_texts(data[0][: d.n])  # a bare string stays a string: refused with a clear message
    return target, target, texts, _validate_labels(data[1][: d.n], len(texts), target.n_classes)


def _trusted(s: Any) -> list[str]:
    """The skops types trusted by ``system.trusted_types`` (``trust_pickle: true`` trusts all)."""
    return list(getattr(s, "trusted_types", None) or ())


def _load_target(s: Any, text: TextSystem) -> Any:
    from sparring.targets.text_load import load_text_target

    return load_text_target(s.model, classes=text.classes, trust_pickle=s.trust_pickle, trusted_types=_trusted(s),
                            output=text.output, headers=text.headers, timeout=text.timeout, retries=text.retries,
                            input_key=text.input_key, output_key=text.output_key,
                            batch_size=min(s.batch_size, 256))


def _from_estimator(estimator: Any, s: Any, text: TextSystem) -> Any:
    from sparring.targets.text import SklearnTextTarget

    kw: dict[str, Any] = {"batch_size": min(s.batch_size, 256)}
    if text.output is not None:
        kw["output"] = text.output
    if text.classes is not None:
        kw["class_names"] = tuple(text.classes)
    return SklearnTextTarget(estimator, **kw)


def _messages(s: Any, text: TextSystem, target: Any) -> tuple[list[str], torch.Tensor]:
    from sparring.data.text import load_sms_spam, text_model_names
    from sparring.data.text_files import encode_labels, load_text_file

    d = s.data
    if d.source == "zoo":
        if s.model not in text_model_names():
            raise ParameterError(f"system.data.source 'zoo' holds the SMS messages of the text zoo models; "
                                 f"{s.model!r} needs its own messages: system.data.source: messages.csv (or .tsv, "
                                 ".jsonl, .parquet) with system.text.text_column / label_column.")
        ds = load_sms_spam()
        return (ds.x_test, ds.y_test) if d.split == "test" else (ds.x_train, ds.y_train)
    try:
        table = load_text_file(d.source, text_col=text.text_column, label_col=text.label_column, header=text.header)
        if table.labels is None:
            if text.label is None:
                raise LabelError(f"{d.source} has no label column; name it (system.text.label_column) or give the "
                                 "class of every message (system.text.label).")
            y = encode_labels([text.label], target.class_names, target.n_classes, source="system.text.label")
            return table.texts, y.repeat(len(table.texts))
        return table.texts, table.encode(target.class_names, target.n_classes)
    except (DataLoadError, LabelError) as exc:  # the same advice, in the threat model's keys
        raise type(exc)(_in_yaml_terms(str(exc))) from None


_YAML_TERMS = (("--header or --no-header (header=True/False)", "system.text.header: true or false"),
               ("--text-col and --label-col", "system.text.text_column and label_column"),
               ("label_col (--label-col NAME)", "system.text.label_column"),
               ("one label for every message (--label CLASS)", "the class of every message (system.text.label)"),
               ("--classes a,b,c (YAML system.text.classes: [a, b, c])", "system.text.classes: [a, b, c]"),
               ("(--text-col, --label-col)", "(system.text.text_column, label_column)"),
               ("--text-col", "system.text.text_column"), ("--label-col", "system.text.label_column"),
               ("(--classes)", "(system.text.classes)"))


def _in_yaml_terms(message: str) -> str:
    """A data error's hint with the command-line options replaced by their ``system.text`` keys."""
    for flag, key in _YAML_TERMS:
        message = message.replace(flag, key)
    return message
