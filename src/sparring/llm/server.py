"""``sparring serve-llm``: an OpenAI-compatible chat completions server over any chat target, standard library only.

``POST /v1/chat/completions`` with ``{"messages": [...]}`` (other fields are ignored: decoding is the served
target's) answers
``{"id", "object": "chat.completion", "model", "choices": [{"index": 0, "message": {"role": "assistant",
"content"}, "finish_reason"}], "usage": {...}}``; ``GET /v1/models`` lists the one model; ``GET /health``.
Errors answer ``{"error": {"message", "type"}}``: 400 bad request, 404 unknown path, 413 body too large, 429 when
the served target's budget is spent. Binds ``127.0.0.1`` by default (no authentication). Model calls are
serialised with a lock. The same design as :mod:`sparring.serving`, which serves classifiers.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from sparring.errors import ParameterError, QueryBudgetExceeded, SparringError
from sparring.llm.chat import ChatTarget, check_messages

__all__ = ["ChatServer", "make_chat_server"]

logger = logging.getLogger(__name__)
MAX_BODY = 4 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], target: ChatTarget) -> None:
        self.target = target
        self.lock = threading.Lock()
        self.served = 0
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send(status, {"error": {"message": message, "type": kind}})

    def do_GET(self) -> None:
        name = self.server.target.name
        if self.path == "/health":
            self._send(200, {"status": "ok", "model": name})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "sparring"}]})
        else:
            self._error(404, f"unknown path {self.path}; POST /v1/chat/completions")

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"unknown path {self.path}; POST /v1/chat/completions")
            return
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self._error(411, "a Content-Length header with the body's size in bytes is required")
            return
        if length > MAX_BODY:
            self._error(413, f"body of {length} bytes exceeds {MAX_BODY}")
            return
        try:
            body = json.loads(self.rfile.read(length).decode("utf-8"))
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            messages = check_messages(body.get("messages"))  # type: ignore[arg-type]
        except (ValueError, UnicodeDecodeError) as exc:
            self._error(400, f"bad request: {exc}")
            return
        target = self.server.target
        try:
            with self.server.lock:
                reply = target.chat([messages])[0]
                self.server.served += 1
                n = self.server.served
        except QueryBudgetExceeded as exc:
            self._error(429, str(exc), "rate_limit_error")
            return
        except SparringError as exc:
            self._error(500, str(exc), "server_error")
            return
        if reply.error is not None:
            self._error(400, reply.error)
            return
        self._send(200, {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "model": target.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": reply.finish_reason}],
            "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                      "total_tokens": reply.prompt_tokens + reply.completion_tokens}})

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)


class ChatServer:
    """A running (or ready) OpenAI-compatible server; ``url`` is the base (give it to
    :class:`~sparring.llm.openai_api.OpenAIChatClient`)."""

    def __init__(self, httpd: _Server) -> None:
        self._httpd = httpd
        self._thread: threading.Thread | None = None
        host, port = httpd.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self.target = httpd.target

    def start(self) -> ChatServer:
        if self._thread is not None:
            raise ParameterError("this server is already started; call stop() first.")
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"serve-llm {self.url}",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> ChatServer:
        return self.start() if self._thread is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def make_chat_server(target: ChatTarget, host: str = "127.0.0.1", port: int = 0) -> ChatServer:
    """Bind (not yet serve) an OpenAI-compatible server for ``target``; ``port=0`` picks a free port."""
    if not isinstance(target, ChatTarget):
        raise ParameterError(f"make_chat_server needs a ChatTarget; got {type(target).__name__}.")
    return ChatServer(_Server((host, port), target))
