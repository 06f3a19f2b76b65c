"""Any OpenAI-compatible ``/v1/chat/completions`` API as a chat target (httpx)."""

from __future__ import annotations

import json
import os
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from sparring.errors import EndpointError, ParameterError
from sparring.llm.chat import ChatReply, ChatTarget, Message

__all__ = ["OpenAIChatClient"]

_RETRY = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
_MAX_WAIT = 60.0


class OpenAIChatClient(ChatTarget):
    """A chat model behind ``POST {base_url}/v1/chat/completions`` (OpenAI's format: ``{"model", "messages",
    "max_tokens", "temperature", "seed"}`` in, ``{"choices": [{"message": {"content"}}], "usage"}`` out).

    Failures: connection errors, timeouts, 429 and 5xx are retried ``retries`` times; the wait before retry ``i``
    is the server's ``Retry-After`` (seconds, at most 60) when it sends one, else ``backoff * 2**i``. Other 4xx, a
    body that is not JSON, or a reply without ``choices[0].message.content`` raise
    :class:`~sparring.errors.EndpointError` naming what came back. The API key is read from the environment
    variable ``api_key_env`` at construction and sent as ``Authorization: Bearer``; it is never logged, put in an
    error or in :meth:`describe`.

    Args:
        base_url: e.g. ``"http://127.0.0.1:8000"`` (``/v1/chat/completions`` is appended unless already there).
        model: the ``model`` field sent.
        api_key_env: name of the environment variable holding the key (``None``: send none).
        timeout, retries, backoff: as for :class:`~sparring.targets.http.HttpTarget`.
        max_new_tokens, temperature, seed: decoding parameters sent with every request.
        request_budget, token_budget, batch_size: see :class:`~sparring.llm.chat.ChatTarget`.
        transport: an ``httpx.BaseTransport`` in place of the network (tests).
    """

    def __init__(self, base_url: str, *, model: str = "default", api_key_env: str | None = None,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 0.5, max_new_tokens: int = 64,
                 temperature: float = 0.0, seed: int = 0, request_budget: int | None = None,
                 token_budget: int | None = None, batch_size: int = 1,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(request_budget=request_budget, token_budget=token_budget, batch_size=batch_size)
        parts = urlsplit(base_url) if isinstance(base_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ParameterError(f"base_url must be an http(s) address such as 'http://127.0.0.1:8000'; got "
                                 f"{base_url!r}.")
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise ParameterError(f"timeout must be a positive number of seconds; got {timeout!r}.")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ParameterError(f"retries must be a non-negative integer; got {retries!r}.")
        headers = {}
        if api_key_env is not None:
            key = os.environ.get(api_key_env)
            if not key:
                raise ParameterError(f"the API key variable {api_key_env} is not set (or empty); export it, or "
                                     "drop api_key_env for an API without a key.")
            headers["Authorization"] = f"Bearer {key}"
        path = parts.path.rstrip("/")
        self.url = base_url.rstrip("/") + ("" if path.endswith("/chat/completions") else
                                           "/chat/completions" if path.endswith("/v1") else "/v1/chat/completions")
        self._shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{urlsplit(self.url).path}"
        self.name = model
        self.model, self.timeout, self.retries, self.backoff = model, float(timeout), retries, float(backoff)
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, float(temperature), int(seed)
        self.requests_sent = 0
        self.waits: list[float] = []
        self._client = httpx.Client(transport=transport, timeout=self.timeout, headers=headers,
                                    follow_redirects=False)

    def _worst_case_tokens(self, conversations: list[list[Message]]) -> int:
        return self.max_new_tokens * len(conversations)

    def _chat_batch(self, conversations: list[list[Message]]) -> list[ChatReply]:
        return [self._one(c) for c in conversations]

    def _one(self, conversation: list[Message]) -> ChatReply:
        body = {"model": self.model, "messages": conversation, "max_tokens": self.max_new_tokens,
                "temperature": self.temperature, "seed": self.seed}
        problem = ""
        wait = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                self.waits.append(wait)
                time.sleep(wait)
            self.requests_sent += 1
            wait = self.backoff * 2 ** attempt
            try:
                resp = self._client.post(self.url, json=body)
            except httpx.TimeoutException:
                problem = f"timed out after {self.timeout:g}s (raise timeout=...)"
                continue
            except httpx.TransportError as exc:
                problem = (f"is unreachable ({type(exc).__name__}); check that the server runs and the host and "
                           "port are right")
                continue
            if resp.status_code in _RETRY:
                after = _retry_after(resp.headers.get("retry-after"))
                wait = wait if after is None else after
                problem = f"answered HTTP {resp.status_code}" + (" (rate limited: raise retries=... or wait)"
                                                                 if resp.status_code == 429 else "")
                continue
            if not resp.is_success:
                raise EndpointError(f"{self._shown} answered HTTP {resp.status_code}: {resp.text[:200]!r}. "
                                    "Check the URL, the model name and the API key variable.")
            return self._read(resp)
        raise EndpointError(f"{self._shown} {problem} ({self.retries + 1} attempt(s)).")

    def _read(self, resp: httpx.Response) -> ChatReply:
        try:
            answer = resp.json()
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise EndpointError(f"{self._shown} answered malformed JSON: {resp.text[:200]!r}. Check that the URL "
                                "is an OpenAI-compatible chat completions endpoint.") from None
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or not choices:
            keys = sorted(answer) if isinstance(answer, dict) else type(answer).__name__
            raise EndpointError(f"{self._shown} answered without choices (got {keys}); an OpenAI-compatible "
                                "reply has choices[0].message.content.")
        first = choices[0] if isinstance(choices[0], dict) else {}
        msg = first.get("message")
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, str):
            raise EndpointError(f"{self._shown} answered a choice without message.content: {str(first)[:200]}.")
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        return ChatReply(content, prompt_tokens=int(usage.get("prompt_tokens", 0) or 0),
                         completion_tokens=int(usage.get("completion_tokens", 0) or 0),
                         finish_reason=str(first.get("finish_reason") or "stop"))

    def close(self) -> None:
        self._client.close()

    def decoding(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "seed": self.seed,
                "batch_size": self.batch_size}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(url=self._shown, model=self.model, decoding=self.decoding(), retries=self.retries)
        return d


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form; an HTTP date is treated as absent)."""
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), _MAX_WAIT)
    except ValueError:
        return None
