"""Text classifiers under test: any callable, scikit-learn text pipelines, torch models over an encoder, HTTP APIs.

A text target takes a list of strings and returns class scores ``(n, n_classes)`` as a float tensor. Like the
tensor :class:`~sparring.targets.Target`, every example sent is charged to a
:class:`~sparring.targets.base.QueryCounter` (a batch that would cross the budget is refused before anything is
sent). Inputs are validated once at the user-facing methods (:meth:`TextTarget.scores`, :meth:`TextTarget.predict`):
non-string items, empty strings and bytes that are not valid UTF-8 raise :class:`~sparring.errors.InputSpecError`.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import numpy as np
import torch
from torch import nn

from sparring.errors import EndpointError, InputSpecError, LabelError, ParameterError
from sparring.targets import http as _http
from sparring.targets.base import QueryCounter, ScoreKind

__all__ = ["CallableTextTarget", "HttpTextTarget", "SklearnTextTarget", "TextTarget", "TorchTextTarget",
           "validate_texts"]


def validate_texts(texts: Any) -> list[str]:
    """``texts`` as a list of non-empty ``str``; bytes are decoded as strict UTF-8.

    Raises:
        InputSpecError: a single string instead of a list, an empty list, an item that is not ``str``/``bytes``,
            an empty or whitespace-only string, or bytes that are not valid UTF-8 (the message names the index).
    """
    if isinstance(texts, str | bytes):
        raise InputSpecError(f"texts must be a list of strings; got a single {type(texts).__name__} "
                             f"({texts[:40]!r}). Wrap it in a list: [text].")
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    if not isinstance(texts, Sequence):
        raise InputSpecError(f"texts must be a list of strings; got {type(texts).__name__}.")
    if len(texts) == 0:
        raise InputSpecError("texts is empty; pass at least one message.")
    out: list[str] = []
    for i, t in enumerate(texts):
        if isinstance(t, bytes):
            try:
                t = t.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputSpecError(f"texts[{i}] is not valid UTF-8 ({exc.reason} at byte {exc.start}: "
                                     f"{t[max(0, exc.start - 8):exc.start + 8]!r}); decode it with the right "
                                     "codec first, or pass str.") from None
        if not isinstance(t, str):
            raise InputSpecError(f"texts[{i}] is a {type(t).__name__} ({t!r:.40}); every item must be a str "
                                 "(or UTF-8 bytes). Convert it, or drop it.")
        if not t.strip():
            raise InputSpecError(f"texts[{i}] is empty or whitespace only ({t!r}); a classifier needs text. "
                                 "Drop empty messages before scoring.")
        out.append(t)
    return out


def _validate_labels(y: Any, n: int, n_classes: int) -> torch.Tensor:
    yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if yt.ndim != 1 or yt.shape[0] != n:
        raise LabelError(f"labels must be a flat sequence of {n} integers (one per text); got shape "
                         f"{tuple(yt.shape)}.")
    if yt.is_floating_point() or yt.dtype == torch.bool:
        raise LabelError(f"labels must be integers 0..{n_classes - 1}; got dtype {yt.dtype}.")
    yt = yt.long()
    if n and (int(yt.min()) < 0 or int(yt.max()) >= n_classes):
        raise LabelError(f"labels must be in 0..{n_classes - 1}; got values {sorted(set(yt.tolist()))[:10]}.")
    return yt


class TextTarget(ABC):
    """A text classifier under test, with scores access and a query budget.

    Subclasses implement :meth:`_scores_batch` (one batch of already-validated strings -> float ``(n, n_classes)``).

    Args:
        n_classes: number of classes (>= 2).
        output: whether the scores are ``"probabilities"`` or ``"logits"``.
        class_names: optional names for reports (e.g. ``("ham", "spam")``).
        batch_size: texts per model call.
        query_budget: most texts the target will score; ``None`` for no limit.
    """

    def __init__(self, n_classes: int = 2, *, output: ScoreKind = "probabilities",
                 class_names: Sequence[str] | None = None, batch_size: int = 256,
                 query_budget: int | None = None) -> None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ParameterError(f"n_classes must be an integer >= 2; got {n_classes!r}.")
        if output not in ("logits", "probabilities"):
            raise ParameterError(f"output must be 'logits' or 'probabilities'; got {output!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ParameterError(f"batch_size must be a positive integer; got {batch_size!r}.")
        if class_names is not None and len(class_names) != n_classes:
            raise ParameterError(f"class_names needs {n_classes} names; got {list(class_names)}.")
        self.n_classes = n_classes
        self.output: ScoreKind = output
        self.class_names = tuple(class_names) if class_names is not None else None
        self.batch_size = batch_size
        self.counter = QueryCounter(query_budget)

    @abstractmethod
    def _scores_batch(self, texts: list[str]) -> torch.Tensor:
        """Raw scores ``(len(texts), n_classes)`` for one batch of validated strings."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    # ------------------------------------------------------------------ attack-facing (no validation)
    def query(self, texts: list[str]) -> torch.Tensor:
        """Scores for strings already known to be valid: batched and counted (a refused batch sends nothing)."""
        outs = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            self.counter.charge(len(chunk))
            out = self._scores_batch(chunk)
            if out.shape != (len(chunk), self.n_classes) or not bool(torch.isfinite(out).all()):
                raise EndpointError(f"{type(self).__name__} produced scores of shape {tuple(out.shape)} "
                                    f"(expected {(len(chunk), self.n_classes)}, finite); check the model, and "
                                    "declare its classes (classes=[...], --classes a,b,c) if it has not "
                                    f"{self.n_classes}.")
            outs.append(out.float())
        return torch.cat(outs) if len(outs) != 1 else outs[0]

    def query_proba(self, texts: list[str]) -> torch.Tensor:
        """Class probabilities (softmax of logits) for valid strings; counted like :meth:`query`."""
        s = self.query(texts)
        return s.softmax(dim=1) if self.output == "logits" else s

    # ------------------------------------------------------------------ user-facing (validated)
    def scores(self, texts: Any) -> torch.Tensor:
        """Scores for ``texts`` (list of str or UTF-8 bytes), validated first."""
        return self.query(validate_texts(texts))

    def predict(self, texts: Any) -> torch.Tensor:
        """Predicted class per text."""
        return self.scores(texts).argmax(dim=1)

    def accuracy(self, texts: Any, y: Any) -> float:
        valid = validate_texts(texts)
        yt = _validate_labels(y, len(valid), self.n_classes)
        return float((self.query(valid).argmax(dim=1).cpu() == yt.cpu()).float().mean())

    def describe(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "access": "scores", "output": self.output,
                "n_classes": self.n_classes, "class_names": self.class_names, "query_budget": self.counter.budget}


class CallableTextTarget(TextTarget):
    """Any function ``list[str] -> scores`` (numpy or tensor ``(n, n_classes)``) as a counted target.

    Example:
        >>> t = CallableTextTarget(lambda xs: [[0.0, 1.0] if "free" in x.lower() else [1.0, 0.0] for x in xs])
        >>> t.predict(["FREE prize!", "see you at 5"]).tolist()
        [1, 0]
    """

    def __init__(self, fn: Callable[[list[str]], Any], n_classes: int = 2, **kwargs: Any) -> None:
        if not callable(fn):
            raise ParameterError(f"fn must be callable list[str] -> scores; got {type(fn).__name__}.")
        super().__init__(n_classes, **kwargs)
        self.fn = fn

    def _scores_batch(self, texts: list[str]) -> torch.Tensor:
        return torch.as_tensor(np.asarray(self.fn(texts), dtype=np.float32))


class SklearnTextTarget(TextTarget):
    """A fitted scikit-learn pipeline over raw strings (e.g. ``TfidfVectorizer`` + ``LogisticRegression``).

    Uses ``predict_proba`` when present, else ``decision_function`` (a binary margin ``m`` becomes
    ``[-m/2, m/2]`` logits). Class ``i`` is the estimator's ``classes_[i]``: fitted on integer labels
    ``0..k-1`` the classes are those indices; fitted on names (``"ok"``, ``"toxic"``, ``"threat"``) the names become
    :attr:`class_names` (in ``classes_`` order, which scikit-learn sorts). ``n_classes`` defaults to
    ``len(classes_)``.
    """

    def __init__(self, pipeline: Any, n_classes: int | None = None, **kwargs: Any) -> None:
        method = "predict_proba" if hasattr(pipeline, "predict_proba") else "decision_function"
        if not hasattr(pipeline, method):
            raise ParameterError(f"{type(pipeline).__name__} has neither predict_proba nor decision_function; "
                                 "pass a fitted scikit-learn classifier or pipeline.")
        classes = getattr(pipeline, "classes_", None)
        if classes is not None:
            found = list(np.asarray(classes).tolist())
            if n_classes is not None and n_classes != len(found):
                raise ParameterError(f"the pipeline has {len(found)} classes ({found}); n_classes={n_classes} was "
                                     "given. Drop n_classes (it is read from the pipeline) or fix it.")
            n_classes = len(found)
            if found != list(range(n_classes)):  # fitted on names: they are the class names
                names = [str(c) for c in found]
                given = kwargs.get("class_names")
                if given is not None and [str(g) for g in given] != names:
                    order = " in that order (scikit-learn sorts them)" if sorted(map(str, given)) == sorted(
                        names) else ""
                    raise ParameterError(f"the pipeline's classes are {names}; class_names {list(given)} were "
                                         f"given. Give the pipeline's names{order}, or drop class_names.")
                kwargs["class_names"] = names
        kwargs.setdefault("output", "probabilities" if method == "predict_proba" else "logits")
        super().__init__(2 if n_classes is None else n_classes, **kwargs)
        self.pipeline = pipeline
        self.method = method

    def _scores_batch(self, texts: list[str]) -> torch.Tensor:
        out = np.asarray(getattr(self.pipeline, self.method)(texts), dtype=np.float32)
        if out.ndim == 1:
            out = np.stack([-out / 2, out / 2], axis=1)
        return torch.from_numpy(out)


class TorchTextTarget(TextTarget):
    """A torch model over an encoder: ``model(encode(texts))`` gives logits.

    ``encode`` turns strings into the model's input tensor (token ids from a tokenizer, or sentence embeddings);
    it runs without gradients (text is discrete: attacks on it search, they do not differentiate).
    """

    def __init__(self, model: nn.Module, encode: Callable[[list[str]], torch.Tensor], n_classes: int = 2,
                 **kwargs: Any) -> None:
        if not isinstance(model, nn.Module):
            raise ParameterError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        if not callable(encode):
            raise ParameterError(f"encode must be callable list[str] -> tensor; got {type(encode).__name__}.")
        kwargs.setdefault("output", "logits")
        super().__init__(n_classes, **kwargs)
        self.model = model.eval()
        self.encode = encode

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _scores_batch(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = self.model(self.encode(texts).to(self.device))
        return out


class HttpTextTarget(TextTarget):
    """A remote text-moderation API: ``POST url {input_key: [str, ...]}`` answered by ``{output_key: scores}``.

    Counting, retries (connection errors, timeouts, 429, 5xx; ``backoff * 2**i`` between attempts), redaction of
    credentials and the error messages follow :class:`~sparring.targets.http.HttpTarget`. ``transport`` takes an
    ``httpx.MockTransport`` for tests.
    """

    def __init__(self, url: str, n_classes: int = 2, *, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 0.2, input_key: str = "inputs", output_key: str = "scores",
                 headers: Mapping[str, str] | None = None, transport: httpx.BaseTransport | None = None,
                 **kwargs: Any) -> None:
        parts = httpx.URL(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.host:
            raise ParameterError(f"url must be an http:// or https:// address; got {url!r}.")
        if not (isinstance(retries, int) and retries >= 0) or not timeout > 0 or not backoff >= 0:
            raise ParameterError(f"need timeout > 0, retries >= 0, backoff >= 0; got {timeout!r}, {retries!r}, "
                                 f"{backoff!r}.")
        kwargs.setdefault("batch_size", 64)
        super().__init__(n_classes, **kwargs)
        self.url, self.retries, self.backoff = url, retries, float(backoff)
        self.input_key, self.output_key = input_key, output_key
        self.requests_sent = 0
        self._shown = _http._redact(url)
        self._client = httpx.Client(transport=transport, timeout=timeout, headers=dict(headers or {}))

    def _scores_batch(self, texts: list[str]) -> torch.Tensor:
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.requests_sent += 1
            try:
                resp = self._client.post(self.url, json={self.input_key: texts})
            except httpx.TimeoutException:
                problem = "timed out"
                continue
            except httpx.TransportError as exc:
                problem = f"is unreachable ({type(exc).__name__}: {exc})"
                continue
            if resp.status_code in _http._RETRY_STATUS:
                problem = f"answered HTTP {resp.status_code}: {_http._error_text(resp)}"
                continue
            if not resp.is_success:
                raise EndpointError(f"{self._shown} answered HTTP {resp.status_code}: {_http._error_text(resp)}. "
                                    + _http._status_hint(resp.status_code))
            return self._read(resp, len(texts))
        raise EndpointError(f"{self._shown} {problem} ({self.retries + 1} attempt(s)). "
                            + _http._problem_hint(problem))

    def _read(self, resp: httpx.Response, n: int) -> torch.Tensor:
        try:
            answer = resp.json()
            arr = np.asarray(answer[self.output_key], dtype=np.float32)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise EndpointError(f"{self._shown} answered something unusable ({_http._excerpt(resp.text)!r}); "
                                f"expected JSON with {self.output_key!r}: {n} rows of {self.n_classes} scores. "
                                "Check the URL and output_key.") from None
        if arr.shape != (n, self.n_classes):
            raise EndpointError(f"{self._shown} answered scores of shape {arr.shape}; expected {(n, self.n_classes)}"
                                ". Declare the API's classes (--classes a,b,c; YAML system.text.classes) and check "
                                "output_key.")
        return torch.from_numpy(arr)

    def close(self) -> None:
        self._client.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self._shown}
