"""Running the guard: uvicorn on a socket bound first (so port 0 works and the URL is known before serving)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

from sparring.errors import ParameterError
from sparring.guard.service import GuardService

__all__ = ["SINGLE_PROCESS_REASON", "GuardServer"]

SINGLE_PROCESS_REASON = (
    "the guard serves from one process by design: one lock orders each request's model call, detectors and "
    "PRADA update and its commit; rate-limit buckets, key cache, work queue and dashboard sessions live in that "
    "process's memory, so N workers would allow N times each client's rate and queue, and serve N partial "
    "/metrics. To use more cores or machines, run several guard replicas, each on its own port with its own "
    "/metrics scrape target, sharing one PostgreSQL store (store.url: postgresql://...), which keeps each "
    "client's PRADA and detector-rate state and the one drift window consistent across them.")

logger = logging.getLogger(__name__)


class GuardServer:
    """A guard app served by uvicorn on ``host:port`` (``port=0``: a free one; read :attr:`url`).

    ``start()`` serves in a background thread (tests, notebooks); ``serve_forever()`` in the calling one (the CLI).
    """

    def __init__(self, service: GuardService, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        from sparring.guard.app import create_app

        self.service = service
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(fam, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it (Linux)
        self._sock.bind((host, port))
        self._sock.listen(2048)
        bound = self._sock.getsockname()
        shown = f"[{bound[0]}]" if fam == socket.AF_INET6 else bound[0]
        self.url = f"http://{shown}:{bound[1]}"
        config = uvicorn.Config(create_app(service), log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=30, limit_concurrency=service.config.queue.max_size * 4 + 64)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def predict_url(self) -> str:
        return self.url + "/predict"

    def start(self, timeout: float = 30.0) -> GuardServer:
        if self._thread is not None:
            raise ParameterError("this guard server is already started; call stop() first.")
        self._thread = threading.Thread(target=self._run, name=f"sparring-guard {self.url}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the guard server at {self.url} did not start within {timeout:g} s.")
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def serve_forever(self) -> None:
        logger.info("guard serving at %s", self.url)
        self._run()

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> GuardServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"GuardServer({self.url!r})"

