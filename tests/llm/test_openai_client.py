"""The OpenAI-compatible client: retries that honour Retry-After, typed errors for every bad answer, budgets,
and an API key that never shows up in errors or descriptions."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from sparring.errors import EndpointError, ParameterError, QueryBudgetExceeded
from sparring.llm.openai_api import OpenAIChatClient

CONV = [{"role": "user", "content": "hi"}]
OK = {"choices": [{"message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def _client(handler, **kw) -> OpenAIChatClient:  # type: ignore[no-untyped-def]
    kw.setdefault("backoff", 0.0)
    return OpenAIChatClient("http://api.test", transport=httpx.MockTransport(handler), **kw)


class _Flaky(BaseHTTPRequestHandler):
    """A real local server: the first request gets 429 with Retry-After: 0.3, then a reply."""

    calls: ClassVar[list[float]] = []

    def do_POST(self) -> None:
        import time

        self.rfile.read(int(self.headers["Content-Length"]))
        _Flaky.calls.append(time.monotonic())
        if len(_Flaky.calls) == 1:
            self.send_response(429)
            self.send_header("Retry-After", "0.3")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(OK).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def flaky_server() -> Iterator[str]:
    _Flaky.calls = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_429_with_retry_after_waits_what_the_server_says(flaky_server: str) -> None:
    client = OpenAIChatClient(flaky_server, backoff=5.0, retries=2)
    reply = client.chat([CONV])[0]
    assert reply.text == "hello" and reply.prompt_tokens == 3
    assert client.waits == [0.3] and client.requests_sent == 2
    assert _Flaky.calls[1] - _Flaky.calls[0] >= 0.29
    assert client.tokens.used == 4 and client.counter.used == 1


def test_429_without_retry_after_backs_off_exponentially_then_fails() -> None:
    client = _client(lambda r: httpx.Response(429), retries=2, backoff=0.01)
    with pytest.raises(EndpointError, match=r"HTTP 429.*rate limited.*3 attempt"):
        client.chat([CONV])
    assert client.waits == [0.01, 0.02]


@pytest.mark.parametrize(("response", "match"), [
    (httpx.Response(503, text="overloaded"), "HTTP 503"),
    (httpx.Response(200, text="{not json"), "malformed JSON"),
    (httpx.Response(200, json={"choices": []}), "without choices"),
    (httpx.Response(200, json={"id": "x"}), "without choices"),
    (httpx.Response(200, json={"choices": [{"message": {"role": "assistant"}}]}), "without message.content"),
    (httpx.Response(404, text="no route"), "HTTP 404"),
    (httpx.Response(200, content=b'{"choices": "\xff"}'), "malformed JSON"),
])
def test_bad_answers_are_endpoint_errors(response: httpx.Response, match: str) -> None:
    with pytest.raises(EndpointError, match=match):
        _client(lambda r: response, retries=1).chat([CONV])


def test_endpoint_down_is_an_endpoint_error() -> None:
    client = OpenAIChatClient("http://127.0.0.1:9", retries=1, backoff=0.0, timeout=2)
    with pytest.raises(EndpointError, match="unreachable"):
        client.chat([CONV])


def test_api_key_is_sent_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "sk-very-secret")
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(500)

    client = _client(handler, api_key_env="TEST_LLM_KEY", retries=0)
    with pytest.raises(EndpointError) as info:
        client.chat([CONV])
    assert seen == ["Bearer sk-very-secret"]
    assert "sk-very" not in str(info.value) and "sk-very" not in json.dumps(client.describe())
    monkeypatch.delenv("TEST_LLM_KEY")
    with pytest.raises(ParameterError, match="TEST_LLM_KEY is not set"):
        _client(handler, api_key_env="TEST_LLM_KEY")


def test_request_and_token_budgets_refuse_before_sending() -> None:
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=OK)

    client = _client(handler, request_budget=2)
    client.chat([CONV, CONV])
    with pytest.raises(QueryBudgetExceeded):
        client.chat([CONV])
    assert len(sent) == 2 and sent[0]["messages"] == CONV and sent[0]["temperature"] == 0.0
    client = _client(handler, token_budget=70, max_new_tokens=64)
    client.chat([CONV])
    client.chat([CONV])  # 4 used + 64 worst case = 68 fits
    with pytest.raises(QueryBudgetExceeded, match="token budget"):
        client.chat([CONV])  # 8 + 64 > 70: refused, nothing sent
    assert len(sent) == 4 and client.tokens.used == 8


def test_chat_server_refuses_bad_requests_and_answers_429_when_the_budget_is_spent() -> None:
    import http.client

    from sparring.llm.server import make_chat_server

    inner = _client(lambda r: httpx.Response(200, json=OK), request_budget=1)
    with make_chat_server(inner) as server:
        port = int(server.url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest("POST", "/v1/chat/completions")
        conn.endheaders()
        assert conn.getresponse().status == 411
        conn.close()
        url = server.url + "/v1/chat/completions"
        assert httpx.post(url, content=b"{oops").status_code == 400
        assert httpx.post(url, content=b"\xff\xfe").status_code == 400
        assert httpx.post(url, json={"messages": CONV}).json()["choices"][0]["message"]["content"] == "hello"
        spent = httpx.post(url, json={"messages": CONV})
        assert spent.status_code == 429 and spent.json()["error"]["type"] == "rate_limit_error"
        assert httpx.get(server.url + "/nope").status_code == 404
