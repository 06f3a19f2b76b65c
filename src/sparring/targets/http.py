"""A remote prediction API as a black-box target (score-based or decision-based threat model)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import torch

from sparring.errors import AccessError, EndpointError, ParameterError
from sparring.targets.base import ScoreKind, Target
from sparring.targets.spec import Access, InputSpec

__all__ = ["HttpTarget"]

HttpOutput = Literal["scores", "labels"]

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
_EXCERPT = 200


class HttpTarget(Target):
    """A classifier behind an HTTP JSON API, under test with scores access (or labels only).

    Each batch is sent as ``POST url`` with body ``{input_key: x.tolist()}`` (raw input space, shape
    ``(n, *spec.shape)``) and the answer is read from ``answer[output_key]``: an ``(n, n_classes)`` list of scores, or
    an ``n``-list of integer labels when ``output="labels"``. :func:`sparring.serving.make_server` serves any target
    with exactly this protocol.

    Counting: every example in a batch is charged to :attr:`counter` *before* the batch is sent; a batch that
    would cross ``query_budget`` raises :class:`~sparring.errors.QueryBudgetExceeded` and nothing is sent. A batch
    whose request then fails is still counted (it was sent, and the endpoint may have evaluated it); a batch that
    needed retries is counted once. :attr:`requests_sent` counts HTTP requests, retries included.

    Failures: connection errors, timeouts, HTTP 429 and 5xx are retried ``retries`` times, waiting
    ``backoff * 2**i`` seconds before retry ``i`` (0, 1, ...); other HTTP errors (4xx) are not retried. An answer
    that is not JSON, lacks ``output_key``, has the wrong shape, or holds NaN/inf or out-of-range labels is not
    retried. Every failure raises :class:`~sparring.errors.EndpointError` naming the URL, what happened and what
    to check.

    Args:
        url: the prediction endpoint, e.g. ``"http://127.0.0.1:8000/predict"``.
        spec: the input specification the API accepts (inputs are validated against it before sending).
        output: ``"scores"`` (native access SCORES) or ``"labels"`` (native access LABELS: :meth:`query` raises
            :class:`~sparring.errors.AccessError`, :meth:`query_labels` works).
        score_kind: whether the API's scores are ``"probabilities"`` or ``"logits"``.
        batch_size: examples per request.
        timeout: seconds to wait for connecting and for each read.
        retries: extra attempts after the first for retryable failures (0 for none).
        backoff: base wait in seconds between attempts.
        query_budget, top_k, decimals: see :class:`~sparring.targets.Target` (applied on top of what the API gives).
        input_key: request key that holds the batch.
        output_key: answer key that holds the predictions; default ``"scores"`` or ``"labels"`` after ``output``.
        headers: extra HTTP headers (e.g. ``{"Authorization": "Bearer ..."}``); never put in :meth:`describe`.
        transport: an ``httpx.BaseTransport`` (e.g. ``httpx.MockTransport``) in place of the network.

    Example:
        >>> from sparring.targets import InputSpec
        >>> from sparring.targets.http import HttpTarget
        >>> spec = InputSpec(shape=(1, 28, 28), n_classes=10)
        >>> with HttpTarget("http://127.0.0.1:8000/predict", spec, score_kind="logits") as api:  # doctest: +SKIP
        ...     labels = api.predict(x)
    """

    native_access = Access.SCORES

    def __init__(
        self,
        url: str,
        spec: InputSpec,
        *,
        output: HttpOutput = "scores",
        score_kind: ScoreKind = "probabilities",
        batch_size: int = 64,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        query_budget: int | None = None,
        top_k: int | None = None,
        decimals: int | None = None,
        input_key: str = "inputs",
        output_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ParameterError(f"url must be an http:// or https:// address, e.g. 'http://127.0.0.1:8000/predict'; "
                                 f"got {url!r}.")
        if output not in ("scores", "labels"):
            raise ParameterError(f"output must be 'scores' or 'labels'; got {output!r}.")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ParameterError(f"timeout must be a positive number of seconds; got {timeout!r}.")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ParameterError(f"retries must be a non-negative integer; got {retries!r}.")
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or not backoff >= 0:
            raise ParameterError(f"backoff must be a non-negative number of seconds; got {backoff!r}.")
        for name, key in (("input_key", input_key), ("output_key", output_key)):
            if key is not None and (not isinstance(key, str) or not key):
                raise ParameterError(f"{name} must be a non-empty string; got {key!r}.")
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise ParameterError(f"transport must be an httpx.BaseTransport; got {type(transport).__name__}.")
        if output == "labels":
            self.native_access = Access.LABELS  # instance attribute: the base class checks access against it
        super().__init__(
            spec, output=score_kind, batch_size=batch_size, query_budget=query_budget, top_k=top_k,
            decimals=decimals,
        )
        self.url = url
        self.answers: HttpOutput = output
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.input_key = input_key
        self.output_key = output_key if output_key is not None else output
        self.requests_sent = 0
        self._shown_url = _redact(url)
        self._client = httpx.Client(
            transport=transport, timeout=self.timeout, headers=dict(headers or {}), follow_redirects=False
        )

    # ------------------------------------------------------------------ Target
    def _scores_batch(self, x: torch.Tensor) -> torch.Tensor:
        if self.answers == "labels":
            raise AccessError(f"HttpTarget({self._shown_url}) answers labels only; use query_labels().")
        value = self._post(x)
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise self._bad_answer(
                f"wrong shape: expected ({x.shape[0]}, {self.spec.n_classes}) numbers, got a ragged or non-numeric "
                f"'{self.output_key}' ({_excerpt(json.dumps(value, default=str))})"
            ) from None
        expected = (x.shape[0], self.spec.n_classes)
        if arr.shape != expected:
            raise self._bad_answer(f"wrong shape: expected (n, n_classes) = {expected}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise self._bad_answer(f"{int((~np.isfinite(arr)).any(1).sum())} row(s) of scores hold NaN or inf")
        if self.output == "probabilities":
            self._check_probabilities(arr)
        return torch.from_numpy(arr.astype(np.float32))

    def _check_probabilities(self, arr: np.ndarray) -> None:
        """Scores declared probabilities must look like them: read as probabilities, logits would give wrong
        numbers silently (log of a negative clipped, a margin of unnormalised values). Negative values or rows
        summing above 1 are refused; rows summing below 1 are allowed (an API may send only its top classes)."""
        sums = arr.sum(axis=1)
        negative, over = int((arr < -1e-6).any(axis=1).sum()), int((sums > 1.02).sum())
        if negative or over:
            raise EndpointError(
                f"{self._shown_url} answers scores that are not probabilities ({negative} row(s) with negative "
                f"values, {over} summing above 1; first row sums to {sums[0]:.4g}), but they are declared "
                "probabilities. If the API returns logits, say so: score_kind='logits' (CLI --scores logits; audit "
                "YAML system.http.output: logits)."
            )

    def _labels_batch(self, x: torch.Tensor) -> torch.Tensor:
        if self.answers == "scores":
            return self._scores_batch(x).argmax(dim=1)
        value = self._post(x)
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            arr = np.empty(0)
        if arr.shape != (x.shape[0],):
            raise self._bad_answer(
                f"wrong shape: expected {x.shape[0]} labels (a flat list), got "
                + (f"shape {arr.shape}" if arr.size else _excerpt(json.dumps(value, default=str)))
            )
        n = self.spec.n_classes
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)) or np.any((arr < 0) | (arr >= n)):
            raise self._bad_answer(f"labels must be integers in 0..{n - 1}; got {_excerpt(str(arr.tolist()))}")
        return torch.from_numpy(arr.astype(np.int64))

    # ------------------------------------------------------------------ transport
    def _post(self, x: torch.Tensor) -> Any:
        """Send one batch (with retries) and return ``answer[output_key]``."""
        if self._client.is_closed:
            raise EndpointError(f"this HttpTarget for {self._shown_url} is closed; create a new one to query again.")
        body = {self.input_key: x.detach().cpu().tolist()}
        attempts = self.retries + 1
        problem = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.requests_sent += 1
            try:
                resp = self._client.post(self.url, json=body)
            except httpx.TimeoutException:
                problem = f"timed out after {self.timeout:g}s"
                continue
            except httpx.TransportError as exc:
                problem = f"is unreachable ({type(exc).__name__}: {exc})"
                continue
            if resp.status_code in _RETRY_STATUS:
                problem = f"answered HTTP {resp.status_code}: {_error_text(resp)}"
                continue
            if not resp.is_success:
                raise EndpointError(
                    f"{self._shown_url} answered HTTP {resp.status_code}: {_error_text(resp)}. "
                    + _status_hint(resp.status_code)
                )
            return self._read(resp)
        raise EndpointError(f"{self._shown_url} {problem} ({attempts} attempt(s)). " + _problem_hint(problem))

    def _read(self, resp: httpx.Response) -> Any:
        try:
            answer = resp.json()
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise self._bad_answer(f"malformed JSON in the answer: {_excerpt(resp.text)!r}") from None
        if not isinstance(answer, dict) or self.output_key not in answer:
            keys = sorted(answer) if isinstance(answer, dict) else type(answer).__name__
            raise self._bad_answer(
                f"the answer has no key {self.output_key!r} (got {keys}); set output_key= to the key that holds "
                "the predictions"
            )
        return answer[self.output_key]

    def _bad_answer(self, what: str) -> EndpointError:
        return EndpointError(
            f"{self._shown_url} answered something unusable: {what}. Check that the URL is the prediction endpoint, "
            f"that output={self.answers!r}/output_key={self.output_key!r} match what it returns, and that "
            f"InputSpec.n_classes ({self.spec.n_classes}) matches the model."
        )

    # ------------------------------------------------------------------ lifecycle, description
    def close(self) -> None:
        """Close the HTTP connections. Querying afterwards raises :class:`~sparring.errors.EndpointError`."""
        self._client.close()

    def __enter__(self) -> HttpTarget:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["url"] = self._shown_url
        if self.answers == "labels":
            d["output"] = "labels"
        d.update(batch_size=self.batch_size, timeout=self.timeout, retries=self.retries)
        return d

    def __repr__(self) -> str:
        return f"HttpTarget({self._shown_url!r}, output={self.answers!r}, access={self.access.name.lower()})"


def _redact(url: str) -> str:
    """The URL without password or query string, so reports and errors never leak credentials."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…"


def _error_text(resp: httpx.Response) -> str:
    """The server's own error message if it sent one as JSON ``{"error": ...}``, else the start of the body."""
    try:
        answer = resp.json()
    except (UnicodeDecodeError, json.JSONDecodeError):
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return _excerpt(answer["error"])
    return _excerpt(resp.text) or "(empty body)"


def _status_hint(status: int) -> str:
    if status in (401, 403):
        return "Check the credentials passed in headers=..."
    if status in (404, 405):
        return "Check the URL: it must be the endpoint that takes POST predictions (e.g. .../predict)."
    if status in (400, 413, 415, 422):
        return ("Check that the InputSpec (shape, bounds) and input_key match what the endpoint expects; "
                "for 413 lower batch_size.")
    return "Check the endpoint's logs."


def _problem_hint(problem: str) -> str:
    if problem.startswith("timed out"):
        return "Check the server's load, or raise timeout=... or lower batch_size=..."
    if problem.startswith("is unreachable"):
        return "Check that the server is running and that the host and port are right."
    if "HTTP 429" in problem:
        return "The endpoint is rate-limiting or its quota is spent: raise backoff=... or wait."
    return "The endpoint failed on its side: check its logs, or raise retries=... for a flaky one."

