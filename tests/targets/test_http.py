"""HttpTarget against a real local prediction server (sparring.serving), and against injected failures.

All traffic stays on 127.0.0.1; every server a test starts is stopped by its fixture.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import torch

from sparring.errors import AccessError, EndpointError, ParameterError, QueryBudgetExceeded
from sparring.serving import PredictionServer, make_server
from sparring.targets.http import HttpTarget
from sparring.targets.spec import Access, InputSpec
from sparring.targets.torch import TorchTarget

SMALL = InputSpec(shape=(4,), n_classes=3, layout="features")
MakeTarget = Callable[..., HttpTarget]


# ---------------------------------------------------------------------------------------------- fixtures
class CountingTransport(httpx.BaseTransport):
    """The real network transport, recording the batch size of every request it sends."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.batch_sizes: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.batch_sizes.append(len(json.loads(request.read())["inputs"]))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture()
def make_target() -> Iterator[MakeTarget]:
    """Build HttpTargets that are all closed at the end of the test."""
    made: list[HttpTarget] = []

    def build(url: str, spec: InputSpec, **kw: Any) -> HttpTarget:
        made.append(HttpTarget(url, spec, **kw))
        return made[-1]

    yield build
    for t in made:
        t.close()


@pytest.fixture(scope="module")
def local(digits_cnn: TorchTarget) -> TorchTarget:
    """The zoo digits CNN with its own query counter (the session fixture's counter stays untouched)."""
    return TorchTarget(digits_cnn.model, digits_cnn.spec)


@pytest.fixture(scope="module")
def server(local: TorchTarget) -> Iterator[PredictionServer]:
    served = TorchTarget(local.model, local.spec)
    with make_server(served) as srv:
        yield srv


@pytest.fixture(scope="module")
def labels_server(local: TorchTarget) -> Iterator[PredictionServer]:
    served = TorchTarget(local.model, local.spec, access=Access.LABELS)
    with make_server(served) as srv:
        yield srv


class _ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: list[tuple[int, str, float]]) -> None:
        self.script = script
        self.hits = 0
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out closed its socket: writing the late answer fails, as expected


class _ScriptedHandler(BaseHTTPRequestHandler):
    """Answers POSTs from a script of (status, body, delay); the last entry repeats."""

    def do_POST(self) -> None:
        srv: _ScriptedServer = self.server  # type: ignore[assignment]
        self.rfile.read(int(self.headers["Content-Length"]))
        status, body, delay = srv.script.pop(0) if len(srv.script) > 1 else srv.script[0]
        srv.hits += 1
        if delay:
            srv.release.wait(delay)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def scripted() -> Iterator[Callable[..., tuple[str, _ScriptedServer]]]:
    """Start failure-injecting servers: ``scripted((503, '...', 0.0), (200, '...', 0.0))`` -> (url, server)."""
    started: list[tuple[_ScriptedServer, threading.Thread]] = []

    def start(*script: tuple[int, str, float]) -> tuple[str, _ScriptedServer]:
        srv = _ScriptedServer(list(script))
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        started.append((srv, thread))
        return f"http://127.0.0.1:{srv.server_address[1]}/predict", srv

    yield start
    for srv, thread in started:
        srv.release.set()
        srv.shutdown()
        thread.join()
        srv.server_close()


def mock(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return httpx.MockTransport(record), seen


def scores_json(n: int, n_classes: int = 3) -> str:
    return json.dumps({"scores": [[1.0 / n_classes] * n_classes] * n})


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- real server
def test_http_scores_match_local_logits(
    server: PredictionServer, local: TorchTarget, digits_batch: tuple[torch.Tensor, torch.Tensor],
    make_target: MakeTarget,
) -> None:
    x = digits_batch[0][:100]
    api = make_target(server.predict_url, local.spec, score_kind="logits")
    remote = api.query(x)
    assert remote.shape == (100, 10) and remote.dtype == torch.float32
    torch.testing.assert_close(remote, local.query(x), rtol=0, atol=1e-6)
    assert api.view_output == local.view_output == "logits"


def test_http_labels_agree_with_local(
    server: PredictionServer, local: TorchTarget, digits_batch: tuple[torch.Tensor, torch.Tensor],
    make_target: MakeTarget,
) -> None:
    x, y = digits_batch
    api = make_target(server.predict_url, local.spec, score_kind="logits")
    assert torch.equal(api.predict(x), local.predict(x))
    assert api.accuracy(x, y) == pytest.approx(local.accuracy(x, y))


def test_health_reports_spec_and_output(server: PredictionServer, labels_server: PredictionServer) -> None:
    with httpx.Client() as client:
        health = client.get(server.url + "/health").json()
        labels_health = client.get(labels_server.url + "/health").json()
    assert health["status"] == "ok"
    assert InputSpec.from_dict(health["spec"]) == server.target.spec
    assert (health["output"], health["score_kind"]) == ("scores", "logits")
    assert labels_health["output"] == "labels"


def test_http_target_batches_300_examples_into_5_requests(
    server: PredictionServer, digits: Any, make_target: MakeTarget
) -> None:
    transport = CountingTransport()
    api = make_target(server.predict_url, digits.spec, score_kind="logits", batch_size=64, transport=transport)
    out = api.query(digits.x_test[:300])
    assert out.shape == (300, 10)
    assert transport.batch_sizes == [64, 64, 64, 64, 44]
    assert (api.counter.used, api.counter.calls, api.requests_sent) == (300, 5, 5)


def test_http_target_stops_at_budget(
    server: PredictionServer, digits_batch: tuple[torch.Tensor, torch.Tensor], make_target: MakeTarget
) -> None:
    x = digits_batch[0]
    transport = CountingTransport()
    api = make_target(server.predict_url, server.target.spec, batch_size=64, query_budget=100, transport=transport,
                      score_kind="logits")
    with pytest.raises(QueryBudgetExceeded, match="64 of 100 queries used") as info:
        api.query(x[:128])
    assert (info.value.used, info.value.budget, info.value.requested) == (64, 100, 64)
    assert api.counter.used == 64  # the refused second batch was not charged...
    assert transport.batch_sizes == [64]  # ...and not sent
    api.query(x[:36])  # what is left of the budget still works
    assert api.counter.used == 100


def test_budget_refusal_sends_nothing() -> None:
    transport, seen = mock(lambda r: httpx.Response(200, text=scores_json(8)))
    with HttpTarget("http://127.0.0.1:9/predict", SMALL, query_budget=5, transport=transport) as api:
        with pytest.raises(QueryBudgetExceeded):
            api.query(torch.zeros(8, 4))
        assert (seen, api.counter.used, api.requests_sent) == ([], 0, 0)


def test_labels_only_server_and_target(
    labels_server: PredictionServer, local: TorchTarget, digits_batch: tuple[torch.Tensor, torch.Tensor],
    make_target: MakeTarget,
) -> None:
    x = digits_batch[0]
    api = make_target(labels_server.predict_url, local.spec, output="labels")
    assert api.access == Access.LABELS
    with pytest.raises(AccessError, match="labels only"):
        api.query(x)
    assert api.counter.used == 0
    assert torch.equal(api.query_labels(x), local.query_labels(x))
    assert api.describe()["output"] == "labels"


def test_scores_target_against_labels_server_names_the_missing_key(
    labels_server: PredictionServer, local: TorchTarget, make_target: MakeTarget
) -> None:
    api = make_target(labels_server.predict_url, local.spec)
    with pytest.raises(EndpointError, match=r"no key 'scores' \(got \['labels'\]\)"):
        api.query(torch.zeros(2, 1, 28, 28))


def test_server_configured_for_labels_answers_labels(local: TorchTarget) -> None:
    with make_server(TorchTarget(local.model, local.spec), output="labels") as srv, httpx.Client() as client:
        answer = client.post(srv.predict_url, json={"inputs": torch.zeros(3, 1, 28, 28).tolist()}).json()
    assert set(answer) == {"labels"} and len(answer["labels"]) == 3


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"inputs": [[0.5] * 4]}, "inputs have shape (1, 4)"),
        ({"inputs": torch.full((1, 1, 28, 28), 2.0).tolist()}, "outside the declared bounds"),
        ({"inputs": [[[["a"]]]]}, "rectangular batch of numbers"),
        ({"x": []}, "key 'inputs'"),
        ("not json", "not valid JSON"),
    ],
)
def test_server_rejects_bad_input_with_400(server: PredictionServer, body: Any, needle: str) -> None:
    with httpx.Client() as client:
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        resp = client.post(server.predict_url, content=content)
    assert resp.status_code == 400
    assert needle in resp.json()["error"]


def test_server_unknown_path_is_404(server: PredictionServer) -> None:
    with httpx.Client() as client:
        assert client.get(server.url + "/nope").status_code == 404
        assert client.post(server.url + "/nope", json={"inputs": []}).status_code == 404


def test_http_target_reports_server_400_without_retry(server: PredictionServer, make_target: MakeTarget) -> None:
    wrong = InputSpec(shape=(1, 8, 8), n_classes=10)  # the server expects 1×28×28
    api = make_target(server.predict_url, wrong, retries=3, backoff=0.0)
    with pytest.raises(EndpointError, match=r"HTTP 400: inputs have shape \(2, 1, 8, 8\)") as info:
        api.query(torch.zeros(2, 1, 8, 8))
    assert server.url in str(info.value) and "InputSpec" in str(info.value)
    assert api.requests_sent == 1
    assert api.counter.used == 2  # it was sent, so it counts


def test_server_budget_spent_answers_429(local: TorchTarget, make_target: MakeTarget) -> None:
    served = TorchTarget(local.model, local.spec, query_budget=2)
    with make_server(served) as srv:
        api = make_target(srv.predict_url, local.spec, retries=0, score_kind="logits")
        api.query(torch.zeros(2, 1, 28, 28))
        with pytest.raises(EndpointError, match="HTTP 429: query budget exhausted"):
            api.query(torch.zeros(1, 1, 28, 28))


# ---------------------------------------------------------------------------------------------- failures
def test_unreachable_endpoint_raises_after_retries(make_target: MakeTarget) -> None:
    url = f"http://127.0.0.1:{closed_port()}/predict"
    api = make_target(url, SMALL, retries=1, backoff=0.0)
    with pytest.raises(EndpointError, match=r"is unreachable .* \(2 attempt\(s\)\)\. Check that the server is running"):
        api.query(torch.zeros(2, 4))
    assert api.requests_sent == 2 and api.counter.used == 2


def test_slow_endpoint_times_out(scripted: Callable[..., tuple[str, _ScriptedServer]], make_target: MakeTarget) -> None:
    url, _ = scripted((200, scores_json(2), 5.0))
    api = make_target(url, SMALL, timeout=0.2, retries=1, backoff=0.0)
    with pytest.raises(EndpointError, match=r"timed out after 0\.2s \(2 attempt\(s\)\).*raise timeout="):
        api.query(torch.zeros(2, 4))
    assert api.requests_sent == 2


def test_503_then_success_is_retried_and_counted_once(
    scripted: Callable[..., tuple[str, _ScriptedServer]], make_target: MakeTarget
) -> None:
    url, srv = scripted((503, '{"error": "warming up"}', 0.0), (200, scores_json(2), 0.0))
    api = make_target(url, SMALL, retries=2, backoff=0.01)
    out = api.query(torch.zeros(2, 4))
    torch.testing.assert_close(out, torch.full((2, 3), 1 / 3))
    assert (srv.hits, api.requests_sent, api.counter.used, api.counter.calls) == (2, 2, 2, 1)


def test_persistent_5xx_raises_with_status_and_body(
    scripted: Callable[..., tuple[str, _ScriptedServer]], make_target: MakeTarget
) -> None:
    url, srv = scripted((502, "<html>bad gateway</html>", 0.0))
    api = make_target(url, SMALL, retries=2, backoff=0.0)
    with pytest.raises(EndpointError, match=r"HTTP 502: <html>bad gateway</html> \(3 attempt\(s\)\)"):
        api.query(torch.zeros(1, 4))
    assert srv.hits == 3


def test_400_is_not_retried() -> None:
    transport, seen = mock(lambda r: httpx.Response(400, json={"error": "feature 3 must be <= 1"}))
    with (
        HttpTarget("http://127.0.0.1:9/predict", SMALL, retries=3, transport=transport) as api,
        pytest.raises(EndpointError, match=r"HTTP 400: feature 3 must be <= 1\. Check that the InputSpec"),
    ):
        api.query(torch.zeros(2, 4))
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        ("{not json", "malformed JSON in the answer: '{not json'"),
        ('{"predictions": []}', r"no key 'scores' \(got \['predictions'\]\); set output_key="),
        ('[[0.1, 0.2, 0.7]]', r"no key 'scores' \(got list\)"),
        (scores_json(2, n_classes=2), r"wrong shape: expected \(n, n_classes\) = \(2, 3\), got \(2, 2\)"),
        ('{"scores": [[0.1, 0.2, 0.7], [0.5]]}', "wrong shape: expected \\(2, 3\\) numbers, got a ragged"),
        ('{"scores": [[0.1, NaN, 0.7], [0.1, 0.2, 0.7]]}', r"1 row\(s\) of scores hold NaN or inf"),
    ],
)
def test_unusable_answer_raises_without_retry(answer: str, needle: str) -> None:
    transport, seen = mock(lambda r: httpx.Response(200, text=answer))
    with (
        HttpTarget("http://127.0.0.1:9/predict", SMALL, transport=transport) as api,
        pytest.raises(EndpointError, match=needle) as info,
    ):
        api.query(torch.zeros(2, 4))
    assert "http://127.0.0.1:9/predict answered something unusable" in str(info.value)
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("labels", "needle"),
    [([0, 3], r"integers in 0\.\.2"), ([0.5, 1], r"integers in 0\.\.2"), ([0], r"expected 2 labels")],
)
def test_bad_labels_raise(labels: list[Any], needle: str) -> None:
    transport, _ = mock(lambda r: httpx.Response(200, json={"labels": labels}))
    with (
        HttpTarget("http://127.0.0.1:9/predict", SMALL, output="labels", transport=transport) as api,
        pytest.raises(EndpointError, match=needle),
    ):
        api.query_labels(torch.zeros(2, 4))


def test_keys_and_headers_are_configurable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        assert request.headers["X-Api-Key"] == "s3cret"
        return httpx.Response(200, json={"probs": [[0.2, 0.3, 0.5]] * len(body["instances"])})

    transport, seen = mock(answer)
    with HttpTarget(
        "http://user:pw@127.0.0.1:9/v1/models/m:predict?key=abc", SMALL, input_key="instances", output_key="probs",
        headers={"X-Api-Key": "s3cret"}, top_k=1, transport=transport,
    ) as api:
        out = api.query(torch.zeros(3, 4))
        described = json.dumps(api.describe())
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 0.5]] * 3))
    assert len(seen) == 1
    assert '"url": "http://127.0.0.1:9/v1/models/m:predict?' in described
    for secret in ("s3cret", "pw", "abc"):
        assert secret not in described


def test_closed_target_refuses_to_query() -> None:
    transport, _ = mock(lambda r: httpx.Response(200, text=scores_json(1)))
    api = HttpTarget("http://127.0.0.1:9/predict", SMALL, transport=transport)
    api.close()
    with pytest.raises(EndpointError, match="is closed; create a new one"):
        api.query(torch.zeros(1, 4))


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"url": "ftp://host/x"}, "http:// or https://"),
        ({"output": "probs"}, "'scores' or 'labels'"),
        ({"timeout": 0}, "timeout must be a positive"),
        ({"retries": -1}, "retries must be a non-negative integer"),
        ({"backoff": -0.1}, "backoff must be"),
        ({"output_key": ""}, "output_key must be a non-empty string"),
        ({"transport": object()}, "httpx.BaseTransport"),
        ({"batch_size": 0}, "batch_size must be a positive"),
    ],
)
def test_bad_parameters_raise_parameter_error(kw: dict[str, Any], needle: str) -> None:
    args: dict[str, Any] = {"url": "http://127.0.0.1:9/predict", "spec": SMALL, **kw}
    with pytest.raises(ParameterError, match=needle):
        HttpTarget(**args)


def test_make_server_validates_its_arguments(local: TorchTarget) -> None:
    with pytest.raises(ParameterError, match="needs a sparring Target"):
        make_server(local.model)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'scores' or 'labels'"):
        make_server(local, output="probs")  # type: ignore[arg-type]


def test_server_can_block_in_a_thread_and_stop_twice(local: TorchTarget) -> None:
    srv = make_server(TorchTarget(local.model, local.spec))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    with httpx.Client() as client:
        assert client.get(srv.url + "/health").json()["status"] == "ok"
    srv.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    srv.stop()
