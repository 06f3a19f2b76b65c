"""Serve any :class:`~sparring.targets.Target` as a small JSON prediction API, with the standard library only.

The protocol is the one :class:`~sparring.targets.http.HttpTarget` speaks by default:

``POST /predict`` with ``{"inputs": [...]}`` (a batch as nested lists, shape ``(N, *spec.shape)``, raw input space)
    answers ``{"scores": [[...], ...]}`` (``N × n_classes``; logits or probabilities as ``score_kind`` in
    ``/health`` says, after the target's own ``top_k``/``decimals`` view), or ``{"labels": [...]}`` when the server
    answers labels only (``output="labels"``, or a target whose access is labels only).
``GET /health``
    answers ``{"status": "ok", "spec": spec.to_dict(), "output": "scores" | "labels", "score_kind": ...}``.

Errors answer JSON ``{"error": "..."}``: 400 for bad input (the target's :class:`~sparring.targets.InputSpec`
validates every batch), 404 unknown path, 411/413 missing or too large body, 429 when the served target's query
budget is spent, 500 when the model itself fails.

>>> from sparring import zoo
>>> from sparring.serving import make_server
>>> with make_server(zoo.load("digits-cnn")) as server:    # doctest: +SKIP
...     print(server.url)                                   # e.g. http://127.0.0.1:54321, POST to url + "/predict"

The server binds to ``127.0.0.1`` unless told otherwise: it has no authentication, so expose it on a network
interface only behind something that has. Model calls are serialised with a lock (one batch at a time), so a target
that is not thread-safe is safe to serve; requests are read and parsed in parallel threads.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, cast

import numpy as np
import torch

from sparring.errors import ParameterError, QueryBudgetExceeded, SparringError
from sparring.targets.base import Target
from sparring.targets.spec import Access

__all__ = ["PredictionServer", "make_server", "serve"]

logger = logging.getLogger(__name__)

ServeOutput = Literal["scores", "labels"]

DEFAULT_MAX_BODY = 64 * 1024 * 1024  # bytes: about 10 000 digit images as JSON


class _HTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that carries the target and what to answer."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], target: Target, output: ServeOutput, max_body: int
    ) -> None:
        self.target = target
        self.output: ServeOutput = output
        self.max_body = max_body
        self.model_lock = threading.Lock()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # headers and body go out in separate writes; Nagle would delay each ~40 ms
    protocol_version = "HTTP/1.1"  # keep-alive: an attack sends thousands of small batches
    timeout = 60  # seconds an idle keep-alive connection is held open
    server_version = "sparring"

    @property
    def _srv(self) -> _HTTPServer:
        return cast(_HTTPServer, self.server)

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/health":
            self._error(404, f"no route GET {self.path}; use GET /health or POST /predict.")
            return
        srv = self._srv
        self._json(200, {
            "status": "ok",
            "spec": srv.target.spec.to_dict(),
            "output": srv.output,
            "score_kind": srv.target.view_output if srv.output == "scores" else None,
        })

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/predict":
            self.close_connection = True  # the body was not read
            self._error(404, f"no route POST {self.path}; use POST /predict.")
            return
        body = self._read_body()
        if body is None:
            return
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._error(400, f"the request body is not valid JSON ({exc}); send {{\"inputs\": [[...], ...]}}.")
            return
        if not isinstance(payload, dict) or "inputs" not in payload:
            got = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            self._error(400, f"the request must be a JSON object with key 'inputs' (a batch); got {got}.")
            return
        try:
            arr = np.asarray(payload["inputs"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            self._error(400, f"'inputs' must be a rectangular batch of numbers (nested lists); {exc}.")
            return
        srv = self._srv
        target = srv.target
        try:
            x, _ = target.spec.validate(arr)
            with srv.model_lock:
                out = target.query_labels(x) if srv.output == "labels" else target.query(x)
        except QueryBudgetExceeded as exc:
            self._error(429, str(exc))
            return
        except SparringError as exc:  # InputSpecError and friends: the client's fault
            self._error(400, str(exc))
            return
        except Exception as exc:  # the model itself failed: report, keep serving
            logger.exception("the served target failed on a batch of shape %s", tuple(arr.shape))
            self._error(500, f"the model failed on this batch: {type(exc).__name__}: {exc}")
            return
        self._answer(out)

    # ------------------------------------------------------------------ helpers
    def _read_body(self) -> bytes | None:
        length_s = self.headers.get("Content-Length")
        if length_s is None:
            self.close_connection = True
            self._error(411, "a Content-Length header is required (chunked bodies are not supported).")
            return None
        try:
            length = int(length_s)
        except ValueError:
            self.close_connection = True
            self._error(400, f"bad Content-Length {length_s!r}.")
            return None
        if length < 0 or length > self._srv.max_body:
            self.close_connection = True
            self._error(413, f"request body of {length} bytes exceeds the limit of {self._srv.max_body} bytes; "
                             "send smaller batches.")
            return None
        return self.rfile.read(length)

    def _answer(self, out: torch.Tensor) -> None:
        key = "labels" if self._srv.output == "labels" else "scores"
        values = out.detach().cpu()
        if values.is_floating_point() and not bool(torch.isfinite(values).all()):
            self._error(500, "the model produced NaN or inf scores for this batch.")
            return
        self._json(200, {key: values.tolist()})

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _json(self, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)


class PredictionServer:
    """A running (or ready to run) JSON prediction API around one target. Build it with :func:`make_server`.

    Attributes:
        url: the base URL, e.g. ``"http://127.0.0.1:54321"``; predictions at ``url + "/predict"``.
        target: the served target. Its query counter counts every example the server evaluates.
        output: ``"scores"`` or ``"labels"``: what ``/predict`` answers.
    """

    def __init__(self, httpd: _HTTPServer) -> None:
        self._httpd = httpd
        self._thread: threading.Thread | None = None
        self._blocking = False
        host, port = httpd.server_address[:2]
        host_s = host.decode() if isinstance(host, bytes) else str(host)
        if ":" in host_s:
            host_s = f"[{host_s}]"
        self.url = f"http://{host_s}:{port}"
        self.target = httpd.target
        self.output: ServeOutput = httpd.output

    @property
    def predict_url(self) -> str:
        """``url + "/predict"``: what to give :class:`~sparring.targets.http.HttpTarget`."""
        return self.url + "/predict"

    def start(self) -> PredictionServer:
        """Serve in a background (daemon) thread and return at once."""
        if self._thread is not None:
            raise ParameterError("this server is already started; call stop() before starting it again.")
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"sparring-serve {self.url}", daemon=True
        )
        self._thread.start()
        logger.info("serving %s at %s", type(self.target).__name__, self.predict_url)
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` is called from another thread (or Ctrl-C)."""
        if self._thread is not None:
            raise ParameterError("this server is already serving in a background thread; call stop() first.")
        logger.info("serving %s at %s", type(self.target).__name__, self.predict_url)
        self._blocking = True
        try:
            self._httpd.serve_forever()
        finally:
            self._blocking = False
            self._httpd.server_close()

    def stop(self) -> None:
        """Stop serving and close the listening socket. Safe to call twice."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        elif self._blocking:
            self._httpd.shutdown()  # serve_forever() closes the socket as it returns
            return
        self._httpd.server_close()

    def __enter__(self) -> PredictionServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"PredictionServer({self.url!r}, {type(self.target).__name__}, output={self.output!r}, {state})"


def make_server(
    target: Target,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    output: ServeOutput = "scores",
    max_body: int = DEFAULT_MAX_BODY,
) -> PredictionServer:
    """Bind a prediction server for ``target`` (not yet serving: call ``.start()`` or use it as a context manager).

    Args:
        target: any target; every ``/predict`` batch goes through its ``query`` (or ``query_labels``), so its
            ``top_k``/``decimals`` view and its query budget apply to the API as well.
        host: interface to bind; the default ``127.0.0.1`` is reachable from this machine only.
        port: TCP port; ``0`` picks a free one (read it back from ``.url``).
        output: ``"scores"`` or ``"labels"``. A target with labels-only access always answers labels.
        max_body: largest accepted request body in bytes (413 beyond).

    Raises:
        ParameterError: for a bad ``target``, ``output`` or ``max_body``.
        OSError: when the address cannot be bound (port in use, unknown host).
    """
    if not isinstance(target, Target):
        raise ParameterError(f"make_server needs a sparring Target; got {type(target).__name__}.")
    if output not in ("scores", "labels"):
        raise ParameterError(f"output must be 'scores' or 'labels'; got {output!r}.")
    if not isinstance(max_body, int) or max_body < 1:
        raise ParameterError(f"max_body must be a positive number of bytes; got {max_body!r}.")
    if target.access < Access.SCORES:
        output = "labels"
    return PredictionServer(_HTTPServer((host, port), target, output, max_body))


def serve(
    target: Target,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    output: ServeOutput = "scores",
    max_body: int = DEFAULT_MAX_BODY,
) -> None:
    """Serve ``target`` on ``host:port`` and block until interrupted (Ctrl-C). See :func:`make_server`."""
    server = make_server(target, host, port, output=output, max_body=max_body)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopped serving at %s", server.url)
