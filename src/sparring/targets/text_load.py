"""Loading a user's text classifier: zoo names, skops/joblib pipelines, ``module:callable`` entry points, HTTP APIs.

>>> from sparring.targets.text_load import load_text_target
>>> target = load_text_target("tox.skops", classes=["ok", "toxic", "threat"])          # doctest: +SKIP
>>> target = load_text_target("https://mod.example/v1/score", classes=["ok", "toxic"],
...                           headers={"Authorization": "Bearer ${MOD_TOKEN}"})       # doctest: +SKIP

A text model needs no :class:`~sparring.targets.InputSpec` (text has no shape or bounds); it declares its classes:
``classes`` names them in the model's output order (a scikit-learn pipeline fitted on names declares its own).
Nothing is unpickled without consent, as in :func:`sparring.targets.load.load_target`: skops files are checked for
untrusted types (``trusted_types`` lists those you accept; ``trust_pickle=True`` accepts all), and joblib/pickle
files need ``trust_pickle=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sparring.errors import ModelLoadError, ParameterError
from sparring.targets.base import ScoreKind
from sparring.targets.text import CallableTextTarget, HttpTextTarget, SklearnTextTarget, TextTarget

__all__ = ["expand_env", "is_entry_point", "load_text_pipeline", "load_text_target", "probe_text_estimator"]

_ENTRY = re.compile(r"^(?P<module>[\w.\-/\\]+?(?:\.py)?):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
_ENV = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def is_entry_point(source: str) -> bool:
    """Whether ``source`` reads as ``package.module:callable`` (or ``path/to/file.py:callable``), not a URL/file."""
    return (not source.startswith(("http://", "https://")) and not Path(source).exists()
            and _ENTRY.match(source) is not None)


def expand_env(value: str, what: str = "a header") -> str:
    """``value`` with ``$VAR`` / ``${VAR}`` replaced from the environment (secrets stay out of files and reports).

    Raises:
        ParameterError: a variable that is not set (named, with the setting it is for).
    """
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in os.environ:
            raise ParameterError(f"{what} refers to ${name}, which is not set in the environment; export {name}=... "
                                 "before running.")
        return os.environ[name]

    return _ENV.sub(sub, value)


def load_text_target(
    source: str,
    *,
    classes: Sequence[str] | None = None,
    trust_pickle: bool = False,
    trusted_types: Sequence[str] = (),
    output: ScoreKind | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    retries: int = 3,
    input_key: str = "inputs",
    output_key: str = "scores",
    query_budget: int | None = None,
    batch_size: int | None = None,
) -> TextTarget:
    """A :class:`~sparring.targets.text.TextTarget` for ``source``.

    Args:
        source: a text zoo name (``spam-tfidf-logreg``, ``spam-minilm``), a skops or joblib/pickle file holding a
            fitted scikit-learn pipeline over raw strings, ``module:callable`` (see :func:`_from_entry_point`), or
            the ``http(s)://`` URL of a moderation API (``POST {input_key: [str]}`` → ``{output_key: scores}``).
        classes: the class names in the model's output order (their number is the number of classes). Required
            for a URL or callable with more than two classes, and to map label names in data files.
        trust_pickle, trusted_types: consent to unpickling (see the module docstring).
        output: whether the scores are ``"probabilities"`` or ``"logits"`` (default: probabilities for URLs and
            callables; what the pipeline gives for scikit-learn).
        headers, timeout, retries, input_key, output_key: HTTP settings; header values may name environment
            variables (``"Bearer ${TOKEN}"``), expanded here and never reported.
        query_budget, batch_size: see :class:`~sparring.targets.text.TextTarget`.

    Raises:
        ModelLoadError: a missing file, an untrusted pickle, a file that is no text pipeline, an entry point that
            cannot be imported.
        ParameterError: bad classes or HTTP settings.
    """
    if classes is not None:
        classes = _check_classes(classes)
    kw: dict[str, Any] = {"query_budget": query_budget}
    if batch_size is not None:
        kw["batch_size"] = batch_size
    if output is not None:
        kw["output"] = output
    if classes is not None:
        kw["class_names"] = tuple(classes)
    n = len(classes) if classes is not None else 2
    if source.startswith(("http://", "https://")):
        hdrs = {str(k): expand_env(str(v), f"header {k!r}") for k, v in (headers or {}).items()}
        return HttpTextTarget(source, n, timeout=timeout, retries=retries, input_key=input_key,
                              output_key=output_key, headers=hdrs, **kw)
    from sparring.data.text import load_text_model, text_model_names

    if source in text_model_names() and not Path(source).exists():
        if classes is not None and tuple(classes) != ("ham", "spam"):
            raise ParameterError(f"zoo model {source!r} has the classes ('ham', 'spam'); drop --classes.")
        kw.pop("class_names", None)
        return load_text_model(source, **kw)
    if is_entry_point(source):
        return _from_entry_point(source, classes, kw)
    if not Path(source).exists():
        import difflib

        close = difflib.get_close_matches(source, text_model_names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ParameterError(f"unknown text model {source!r}: no such file, and not a text zoo model "
                             f"({', '.join(text_model_names())}), 'module:callable' or an http(s):// URL.{hint}")
    estimator = load_text_pipeline(source, trust_pickle=trust_pickle, trusted_types=trusted_types)
    probe_text_estimator(estimator, source)
    return SklearnTextTarget(estimator, **kw)


def _check_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",")]
    names = [str(c).strip() for c in classes]
    if len(names) < 2 or any(not c for c in names) or len(set(names)) != len(names):
        raise ParameterError(f"classes must be at least two distinct, non-empty names in the model's output order "
                             f"(e.g. --classes ok,toxic,threat); got {list(classes)}.")
    return names


def load_text_pipeline(path: str | os.PathLike[str], *, trust_pickle: bool = False,
                       trusted_types: Sequence[str] = ()) -> Any:
    """The estimator stored in a skops or joblib/pickle file, loaded only with consent (see the module docstring)."""
    from sparring.data.text import text_model_names
    from sparring.targets.load import detect_kind

    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"no such file: {str(p)!r}. A text model is a text zoo name "
                             f"({', '.join(text_model_names())}), a skops/joblib file, 'module:callable' or an "
                             "http(s):// URL.")
    kind = detect_kind(p)
    from sparring.targets.load import _load_pickle, _load_skops

    if kind == "skops":
        return _load_skops(p, trust_pickle, trusted_types)
    if kind == "pickle":
        return _load_pickle(p, trust_pickle)
    raise ModelLoadError(f"{p} is a {kind} file: a tensor model, which takes numbers, not text. A text model is a "
                         "skops/joblib scikit-learn pipeline over raw strings, 'module:callable' returning scores "
                         "for a list of strings, or an http(s):// URL. For a tensor model use sparring attack / "
                         "audit with --spec.")


def probe_text_estimator(estimator: Any, source: str) -> None:
    """Check that a loaded estimator scores raw strings (one local, uncounted call on a probe message).

    Raises:
        ModelLoadError: it has no ``predict_proba``/``decision_function``, or fails on strings (a tabular model).
    """
    method = "predict_proba" if hasattr(estimator, "predict_proba") else "decision_function"
    if not hasattr(estimator, method):
        raise ModelLoadError(f"{source} holds a {type(estimator).__name__}, which has neither predict_proba nor "
                             "decision_function; save a fitted classifier pipeline (e.g. TfidfVectorizer + "
                             "LogisticRegression).")
    try:
        getattr(estimator, method)(["probe message"])
    except Exception as exc:
        raise ModelLoadError(f"{source} holds a {type(estimator).__name__} that does not take raw strings "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); a text "
                             "model is a pipeline that starts with a vectorizer (TfidfVectorizer, ...). A model over "
                             "numeric features is audited with an InputSpec (--spec) instead.") from None


def _import(module: str, source: str) -> Any:
    if module.endswith(".py") or "/" in module or "\\" in module:
        path = Path(module if module.endswith(".py") else module + ".py")
        if not path.is_file():
            raise ModelLoadError(f"entry point {source!r}: no file {str(path)!r}.")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:  # pragma: no cover
            raise ModelLoadError(f"entry point {source!r}: {path} cannot be imported.")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    added = os.getcwd() not in sys.path
    if added:  # the sparring script does not put the working directory on the path; the user's module is there
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    finally:
        if added:
            sys.path.remove(os.getcwd())


def _from_entry_point(source: str, classes: Sequence[str] | None, kw: dict[str, Any]) -> TextTarget:
    """``module:callable``: a function ``list[str] -> scores (n, n_classes)``; or a function of no arguments (or a
    module attribute) giving a :class:`TextTarget`, a fitted scikit-learn text pipeline, or such a function."""
    m = _ENTRY.match(source)
    assert m is not None
    try:
        obj: Any = _import(m["module"], source)
        for part in m["attr"].split("."):
            obj = getattr(obj, part)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"entry point {source!r} cannot be loaded ({type(exc).__name__}: {exc}); check that "
                             "the module imports (run from its folder, or put it on PYTHONPATH) and the name "
                             "exists.") from None
    if callable(obj) and not isinstance(obj, type) and _required_args(obj) == 0:
        try:
            obj = obj()
        except Exception as exc:
            raise ModelLoadError(f"entry point {source!r} raised {type(exc).__name__}: {exc}") from None
    if isinstance(obj, TextTarget):
        if classes is not None and obj.class_names is not None and tuple(classes) != obj.class_names:
            raise ParameterError(f"entry point {source!r} declares the classes {obj.class_names}; --classes "
                                 f"{list(classes)} differ. Drop --classes.")
        return obj
    if hasattr(obj, "predict_proba") or hasattr(obj, "decision_function"):
        probe_text_estimator(obj, source)
        return SklearnTextTarget(obj, **kw)
    if callable(obj) and _required_args(obj) == 1:
        return CallableTextTarget(obj, len(classes) if classes is not None else 2, **kw)
    raise ModelLoadError(f"entry point {source!r} gives a {type(obj).__name__}; expected a function "
                         "list[str] -> scores (n, n_classes), a TextTarget, a fitted scikit-learn text pipeline, "
                         "or a function of no arguments returning one of them.")


def _required_args(fn: Any) -> int:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 1
    return sum(1 for p in sig.parameters.values() if p.default is p.empty
               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
