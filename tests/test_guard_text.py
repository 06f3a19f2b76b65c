"""The guard serving the spam text model over real HTTP: HttpTextTarget clients unchanged, Bad-Characters evasions of
spam messages caught by the unicode detector (flag, reject, normalise-then-classify), clean SMS messages not, and bad
text requests refused with a 4xx and recorded."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from sparring.attacks.text.base import bad_characters
from sparring.data.text import load_sms_spam, load_text_model
from sparring.errors import GuardConfigError
from sparring.guard.config import parse_config
from sparring.guard.open import open_service
from sparring.guard.text import TextGuardService, evasion_chars
from sparring.targets.text import HttpTextTarget, TextTarget
from tests.guard_helpers import bearer, running

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "spam-tfidf-logreg"


def _service(tmp: Path, detectors: list[dict[str, Any]], **extra: Any) -> TextGuardService:
    cfg = {"model": MODEL, "detectors": detectors, "store": {"url": f"sqlite:///{tmp / 'guard.db'}"},
           "rate_limit": {"rate": 10_000, "burst": 10_000}, **extra}
    svc = open_service(parse_config(cfg, base_dir=tmp))
    assert isinstance(svc, TextGuardService)
    return svc


@pytest.fixture(scope="module")
def spam() -> TextTarget:
    return load_text_model(MODEL)


@pytest.fixture(scope="module")
def evasions(spam: TextTarget) -> tuple[list[str], list[str]]:
    """Spam test messages the bare model catches, and their successful Bad-Characters evasions (Boucher et al.)."""
    ds = load_sms_spam()
    msgs = [t for t, y in zip(ds.x_test, ds.y_test.tolist(), strict=True) if y == 1][:30]
    res = bad_characters(max_chars=6)(spam, msgs, torch.ones(len(msgs), dtype=torch.long))
    keep = [i for i in range(len(msgs)) if bool(res.success[i]) and bool(res.clean_correct[i])]
    assert len(keep) >= 5, "the attack should evade the bare spam model on several messages"
    return [msgs[i] for i in keep], [res.adv_texts[i] for i in keep]


@pytest.fixture(scope="module")
def flagging(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Path]]:
    tmp = tmp_path_factory.mktemp("guard-text-flag")
    svc = _service(tmp, [{"kind": "unicode", "policy": "flag"}], limits={"max_batch": 256, "max_text_chars": 500})
    with running(svc) as (server, client, _):
        yield server, client, tmp / "guard.db"


def _events(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT status, decision, input_sha256, message FROM events ORDER BY id").fetchall()


def test_http_text_target_through_the_guard_equals_the_bare_model(flagging: Any, spam: TextTarget) -> None:
    server, client, db = flagging
    msgs = load_sms_spam().x_test[:100]
    with httpx.Client() as http:
        health = http.get(server.url + "/health", headers=bearer(client)).json()
    assert health["kind"] == "text" and health["classes"] == ["ham", "spam"] and health["n_classes"] == 2
    api = HttpTextTarget(server.predict_url, 2, batch_size=25, headers=bearer(client))
    try:
        assert torch.allclose(api.scores(msgs), spam.scores(msgs), atol=1e-6)
        assert torch.equal(api.predict(msgs), spam.predict(msgs))
    finally:
        api.close()
    one = "Are we still meeting at 5?"
    with httpx.Client(headers=bearer(client)) as http:
        r = http.post(server.predict_url, json={"inputs": [one]})
    assert r.status_code == 200 and "guard" not in r.json()
    assert _events(db)[-1][:3] == (200, "ok", hashlib.sha256(one.encode("utf-8")).hexdigest())


def test_clean_sms_messages_are_not_flagged(flagging: Any) -> None:
    """200 held-out messages (ham and spam, as in the data) through the guard: the false-positive rate."""
    server, client, _ = flagging
    msgs = load_sms_spam().x_test[100:300]
    with httpx.Client(headers=bearer(client)) as http:
        r = http.post(server.predict_url, json={"inputs": msgs})
    assert r.status_code == 200
    assert "guard" not in r.json()  # no message of the 200 fired: FPR 0/200
    assert sum(evasion_chars(t) > 0 for t in load_sms_spam().x_train) == 0  # nor any of the 4,180 training ones


def test_bad_characters_evasion_is_flagged(flagging: Any, evasions: tuple[list[str], list[str]],
                                           spam: TextTarget) -> None:
    server, client, db = flagging
    _, adv = evasions
    assert spam.predict(adv).eq(0).all()  # the evasions fool the bare model ...
    with httpx.Client(headers=bearer(client)) as http:
        for text in adv:
            r = http.post(server.predict_url, json={"inputs": [text]})
            assert r.status_code == 200 and r.json()["guard"] == {"flagged": ["unicode"]}, text  # ... the guard sees
            status, decision, sha, _ = _events(db)[-1]
            assert (status, decision, sha) == (200, "flag", hashlib.sha256(text.encode("utf-8")).hexdigest())


def test_reject_policy_and_normalise_then_classify(tmp_path: Path, evasions: tuple[list[str], list[str]]) -> None:
    _, adv = evasions
    svc = _service(tmp_path, [{"kind": "unicode", "policy": "reject", "name": "bad-chars"}])
    with running(svc) as (server, client, _), httpx.Client(headers=bearer(client)) as http:
        r = http.post(server.predict_url, json={"inputs": ["See you at 5", adv[0]]})
        assert r.status_code == 403 and r.json()["guard"] == {"rejected_by": "bad-chars", "examples": [1]}
        assert _events(tmp_path / "guard.db")[-1][:2] == (403, "reject")
    svc.store.close()
    norm = tmp_path / "norm"
    norm.mkdir()
    svc = _service(norm, [{"kind": "unicode", "policy": "log", "normalise": True}])
    with running(svc) as (server, client, _), httpx.Client(headers=bearer(client)) as http:
        r = http.post(server.predict_url, json={"inputs": adv})
        labels = torch.tensor(r.json()["scores"]).argmax(dim=1)
    svc.store.close()
    caught = int(labels.sum())
    assert caught >= 0.8 * len(adv), f"normalised, the model should see spam again ({caught}/{len(adv)})"


@pytest.mark.parametrize(("inputs", "needle"), [
    (["ok", 3], "inputs[1] is a number"),
    (["ok", None], "inputs[1] is a null"),
    ([["nested"]], "inputs[0] is a list"),
    (["fine", ""], "inputs[1] is empty"),
    (["   \n"], "inputs[0] is empty"),
    (["x" * 501], "over the limit of 500"),
    ("a single string", "must be a list of strings"),
    ([], "'inputs' is empty"),
    ([[0.1, 0.2]], "inputs[0] is a list"),
])
def test_bad_text_requests_are_refused_and_recorded(flagging: Any, inputs: Any, needle: str) -> None:
    server, client, db = flagging
    with httpx.Client(headers=bearer(client)) as http:
        r = http.post(server.predict_url, json={"inputs": inputs})
        assert r.status_code == 400 and needle in r.json()["error"], r.text
        status, decision, sha, message = _events(db)[-1]
        assert (status, decision) == (400, "invalid") and needle in message and sha is not None
        assert http.post(server.predict_url, json={"inputs": ["still serving"]}).status_code == 200


def test_too_many_messages_is_refused(flagging: Any) -> None:
    server, client, db = flagging
    with httpx.Client(headers=bearer(client)) as http:
        r = http.post(server.predict_url, json={"inputs": ["hi"] * 257})
    assert r.status_code == 400 and "exceeds the limit of 256" in r.json()["error"]
    assert _events(db)[-1][:2] == (400, "invalid")


def test_text_config_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(GuardConfigError, match="unicode is a text detector"):
        parse_config({"model": "digits-cnn", "detectors": [{"kind": "unicode"}]})
    with pytest.raises(GuardConfigError, match="for a text model use kind: unicode"):
        parse_config({"model": MODEL, "detectors": [{"kind": "max-softmax", "threshold": 0.5}]})
    with pytest.raises(GuardConfigError, match="only unicode takes normalise"):
        parse_config({"model": "digits-cnn", "detectors": [{"kind": "energy", "threshold": 1, "normalise": True}]})
    with pytest.raises(GuardConfigError, match="give threshold"):
        parse_config({"model": MODEL, "detectors": [{"kind": "unicode", "calibrate": {"data": "test"}}]})


def test_evasion_chars_counts_invisibles_and_mixed_script_homoglyphs_only() -> None:
    assert evasion_chars("FR\u0415\u0415 pri\u200bze, c\u0430ll now") == 4  # 2 Cyrillic Е, ZWSP, Cyrillic а
    assert evasion_chars("\uff26\uff32\uff25\uff25 entry") == 4  # fullwidth FREE (NFKC folds it)
    assert evasion_chars("привет, café — “quoted” it’s £5") == 0  # other scripts, accents, punctuation, currency
    assert evasion_chars("rent\x92s") == 0  # a Windows-1252 apostrophe decoded as Latin-1 (as in the SMS data)
