"""A user's own text model and messages, made in the test (not the zoo): a three-class skops TF-IDF pipeline trained
on a CSV with a header and named labels, the same model behind an HTTP moderation endpoint on 127.0.0.1, joblib and
``module:callable`` entry points; through ``load_text_target``, ``sparring attack-text`` and ``sparring audit``."""

from __future__ import annotations

import csv
import json
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from sparring.attacks.text import deepwordbug
from sparring.cli import build_cli
from sparring.errors import EndpointError, LabelError, ModelLoadError, ParameterError
from sparring.targets.text import CallableTextTarget, HttpTextTarget, SklearnTextTarget
from sparring.targets.text_load import load_text_target

pytest.importorskip("skops")

OK = ["thanks for the help", "see you tomorrow", "great game last night", "lunch at noon?", "nice photo",
      "happy birthday friend", "the meeting moved to 3", "good luck on the exam"]
TOXIC = ["you are an idiot", "shut up moron", "what a stupid loser", "you are pathetic trash",
         "nobody likes you idiot", "dumb clown"]
THREAT = ["I will hurt you", "watch your back tonight", "I know where you live",
          "you will regret this, I will find you", "I will break your legs"]
CLASSES = ["ok", "threat", "toxic"]  # scikit-learn sorts the names it was fitted on
TOKEN = "s3cret-token"


def _rows() -> list[tuple[str, str]]:
    rows = [(t, "ok") for t in OK] + [(t, "toxic") for t in TOXIC] + [(t, "threat") for t in THREAT]
    return sorted(rows, key=lambda r: (zlib.crc32(r[0].encode()) % 7, r[0]))  # mixed classes, the same every run


def _pipeline() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rows = _rows()
    pipe = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)),
                         LogisticRegression(C=50.0, max_iter=1000))
    return pipe.fit([t for t, _ in rows], [c for _, c in rows])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import joblib
    import skops.io as sio

    d = tmp_path_factory.mktemp("tox")
    with open(d / "tox.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["message", "label"])
        w.writerows(_rows())
    pipe = _pipeline()
    sio.dump(pipe, d / "tox.skops")
    joblib.dump(pipe, d / "tox.joblib")
    (d / "toxmod.py").write_text(
        "import skops.io as sio\n"
        f"PATH = {str(d / 'tox.skops')!r}\n"
        "def build():\n    return sio.load(PATH)\n"
        "def score(texts):\n    return build().predict_proba(texts)\n", encoding="utf-8")
    return {"dir": d, "csv": d / "tox.csv", "skops": d / "tox.skops", "joblib": d / "tox.joblib",
            "module": d / "toxmod.py"}


class _Moderation(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, pipe: Any) -> None:
        self.pipe, self.requests, self.unauthorised = pipe, 0, 0
        super().__init__(("127.0.0.1", 0), _ModerationHandler)


class _ModerationHandler(BaseHTTPRequestHandler):
    """POST {"texts": [...]} with 'Authorization: Bearer TOKEN' -> {"probs": [[...], ...]}; else 401."""

    def do_POST(self) -> None:
        srv: _Moderation = self.server  # type: ignore[assignment]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            srv.unauthorised += 1
            status, answer = 401, {"error": "bad token"}
        else:
            srv.requests += 1
            status, answer = 200, {"probs": srv.pipe.predict_proba(body["texts"]).tolist()}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def endpoint() -> Iterator[tuple[str, _Moderation]]:
    srv = _Moderation(_pipeline())
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/moderate", srv
    srv.shutdown()
    thread.join()
    srv.server_close()


def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    res = CliRunner().invoke(build_cli(), list(args), env=env)
    return res.exit_code, res.output


# ---------------------------------------------------------------------------------------------- loading
def test_skops_pipeline_fitted_on_names_declares_its_classes(files: dict[str, Path]) -> None:
    t = load_text_target(str(files["skops"]))
    assert isinstance(t, SklearnTextTarget) and t.n_classes == 3 and t.class_names == tuple(CLASSES)
    assert t.predict(["I will hurt you", "you are an idiot", "nice photo"]).tolist() == [1, 2, 0]
    with pytest.raises(ParameterError, match="in that order"):
        load_text_target(str(files["skops"]), classes=["ok", "toxic", "threat"])


def test_joblib_needs_trust_pickle(files: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError, match="trust_pickle"):
        load_text_target(str(files["joblib"]))
    assert load_text_target(str(files["joblib"]), trust_pickle=True).n_classes == 3


def test_untrusted_skops_types_are_named_and_can_be_trusted(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipe = make_pipeline(FunctionTransformer(np.char.lower), TfidfVectorizer(), LogisticRegression())
    pipe.fit(np.array(OK + TOXIC), [0] * len(OK) + [1] * len(TOXIC))
    sio.dump(pipe, tmp_path / "m.skops")
    untrusted = sio.get_untrusted_types(file=tmp_path / "m.skops")
    assert untrusted
    with pytest.raises(ModelLoadError, match="--trusted-type"):
        load_text_target(str(tmp_path / "m.skops"))
    assert load_text_target(str(tmp_path / "m.skops"), trusted_types=untrusted).n_classes == 2


def test_entry_points_function_and_builder(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(files["dir"])
    scorer = load_text_target("toxmod:score", classes=CLASSES)
    assert isinstance(scorer, CallableTextTarget) and scorer.predict(["I will hurt you"]).tolist() == [1]
    built = load_text_target(f"{files['module']}:build")
    assert isinstance(built, SklearnTextTarget) and built.class_names == tuple(CLASSES)
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        load_text_target("toxmod:nothing_here")
    with pytest.raises(EndpointError, match="--classes"):  # a 3-class function declared as binary
        load_text_target("toxmod:score").predict(["hi"])


def test_tensor_model_file_is_not_a_text_model(tmp_path: Path) -> None:
    import torch

    ep = torch.export.export(torch.nn.Linear(4, 2), (torch.zeros(2, 4),))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    with pytest.raises(ModelLoadError, match="tensor model"):
        load_text_target(str(tmp_path / "m.pt2"))


def test_tabular_pipeline_is_not_a_text_model(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    sio.dump(LogisticRegression().fit(np.eye(4), [0, 1, 0, 1]), tmp_path / "tab.skops")
    with pytest.raises(ModelLoadError, match="raw strings"):
        load_text_target(str(tmp_path / "tab.skops"))


def test_http_moderation_api_with_headers_from_the_environment(endpoint: tuple[str, _Moderation],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    url, srv = endpoint
    monkeypatch.setenv("MOD_TOKEN", TOKEN)
    t = load_text_target(url, classes=CLASSES, headers={"Authorization": "Bearer ${MOD_TOKEN}"}, input_key="texts",
                         output_key="probs", retries=0)
    assert isinstance(t, HttpTextTarget) and t.predict(["I will hurt you", "nice photo"]).tolist() == [1, 0]
    assert TOKEN not in json.dumps(t.describe())
    with pytest.raises(ParameterError, match="NOT_SET_ANYWHERE"):
        load_text_target(url, classes=CLASSES, headers={"Authorization": "Bearer ${NOT_SET_ANYWHERE}"})
    bad = load_text_target(url, classes=CLASSES, input_key="texts", output_key="probs", retries=0)
    with pytest.raises(EndpointError, match="401"):
        bad.predict(["hi"])
    assert srv.unauthorised == 1


# ---------------------------------------------------------------------------------------------- attacks
def test_three_class_attack_reports_per_class_with_names(files: dict[str, Path]) -> None:
    from sparring.data.text_files import load_text_file

    t = load_text_target(str(files["skops"]))
    table = load_text_file(files["csv"])
    y = table.encode(t.class_names)
    res = deepwordbug(max_chars=4)(t, table.texts, y)
    s = res.summary()
    assert s["class_names"] == CLASSES and s["clean_accuracy"] == 1.0
    assert set(s["per_class"]) == set(CLASSES)
    assert [s["per_class"][c]["n"] for c in CLASSES] == [len(OK), len(THREAT), len(TOXIC)]
    broken = sum(c["attack_success_rate"] * c["n"] for c in s["per_class"].values())
    assert broken == pytest.approx(s["attack_success_rate"] * res.n)
    for c, v in s["per_class"].items():
        assert c not in v["moved_to"] and sum(v["moved_to"].values()) == round(v["attack_success_rate"] * v["n"])
    for ex in res.examples(5):
        assert ex["label"] in CLASSES and ex["adversarial_label"] in CLASSES and ex["label"] != ex["adversarial_label"]
    assert "Per class" in res.to_html()


# ---------------------------------------------------------------------------------------------- CLI
def test_attack_text_cli_on_a_skops_pipeline_and_a_csv_with_a_header(files: dict[str, Path]) -> None:
    code, out = _cli("attack-text", "deepwordbug", "--model", str(files["skops"]), "--data", str(files["csv"]),
                     "--max-chars", "4", "--json")
    assert code == 0, out
    s = json.loads(out)
    assert s["n"] == len(_rows()) and s["clean_accuracy"] == 1.0  # every row a message, none the header
    assert [s["per_class"][c]["n"] for c in CLASSES] == [len(OK), len(THREAT), len(TOXIC)]
    code, out = _cli("attack-text", "deepwordbug", "--model", str(files["skops"]), "--data", str(files["csv"]),
                     "--label", "threat", "--max-chars", "4", "--json")
    assert code == 0 and json.loads(out)["n"] == len(THREAT) and list(json.loads(out)["per_class"]) == ["threat"]
    code, out = _cli("attack-text", "deepwordbug", "--model", str(files["skops"]), "--data", str(files["csv"]),
                     "--text-col", "msg")
    assert code == 3 and "Did you mean 'message'" in out


def test_attack_text_cli_on_an_http_endpoint(files: dict[str, Path], endpoint: tuple[str, _Moderation]) -> None:
    url, srv = endpoint
    code, out = _cli("attack-text", "bad-characters", "--model", url, "--classes", ",".join(CLASSES),
                     "--http-header", "Authorization: Bearer $MOD_TOKEN", "--input-key", "texts", "--output-key",
                     "probs", "--data", str(files["csv"]), "--max-chars", "3", "--json", env={"MOD_TOKEN": TOKEN})
    assert code == 0, out
    s = json.loads(out)
    assert s["clean_accuracy"] == 1.0 and s["class_names"] == CLASSES and srv.requests >= 1
    assert TOKEN not in out


def test_attack_text_cli_old_defects(tmp_path: Path) -> None:
    """The issue's defects with the zoo spam filter: a CSV header read as a message, ',1' kept in the text, every
    message labelled 1, and a TSV 'label<TAB>message' with names other than ham/spam."""
    spam = ["WINNER!! You have won a FREE prize, call 09061701461 now to claim",
            "URGENT! Your mobile number has won a 2000 cash award, call 09066364589"]
    ham = ["Ok lar... I'll see you at home later", "Sorry, I'll call you later, in a meeting"]
    p = tmp_path / "msgs.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label"]] + [[t, 1] for t in spam] + [[t, 0] for t in ham])
    code, out = _cli("attack-text", "bad-characters", "--data", str(p), "--max-chars", "2", "--json")
    assert code == 0, out
    s = json.loads(out)
    assert s["n"] == 4 and s["clean_accuracy"] == 1.0  # old: n 5 (the header) and clean accuracy 0.6
    assert s["per_class"]["ham"]["n"] == 2 and s["per_class"]["spam"]["n"] == 2
    tsv = tmp_path / "msgs.tsv"
    tsv.write_text("".join(f"junk\t{t}\n" for t in spam) + "".join(f"fine\t{t}\n" for t in ham), encoding="utf-8")
    code, out = _cli("attack-text", "bad-characters", "--data", str(tsv), "--json")
    assert code == 3 and "'junk'" in out  # old: 'junk<TAB>...' kept as the message, labelled 1
    code, out = _cli("attack-text", "bad-characters", "--data", str(tsv), "--classes", "fine,junk", "--json")
    assert code == 3 and "has the classes ('ham', 'spam')" in out


def test_unlabelled_file_for_a_three_class_model_needs_a_label(files: dict[str, Path], tmp_path: Path) -> None:
    p = tmp_path / "m.txt"
    p.write_text("I will hurt you\nwatch your back tonight\n", encoding="utf-8")
    code, out = _cli("attack-text", "deepwordbug", "--model", str(files["skops"]), "--data", str(p))
    assert code == 3 and "--label" in out
    code, out = _cli("attack-text", "deepwordbug", "--model", str(files["skops"]), "--data", str(p), "--label",
                     "threat", "--json")
    assert code == 0 and json.loads(out)["per_class"]["threat"]["n"] == 2
    with pytest.raises(LabelError):
        from sparring.data.text_files import encode_labels

        encode_labels(["threatt"], CLASSES)


# ---------------------------------------------------------------------------------------------- audit YAML
def _tm(model: str, csv_path: Path, n: int = 100, **text: Any) -> dict[str, Any]:
    system: dict[str, Any] = {"model": model, "data": {"source": str(csv_path), "n": n}}
    if text:
        system["text"] = text
    return {"schema_version": 1, "name": "moderation", "system": system,
            "attacker": {"knowledge": "black-box", "query_budget": 60}, "effort": "quick",
            "gates": [{"metric": "clean_accuracy", "min": 0.95},
                      {"metric": "text_evasion_rate", "max_chars": 3, "max": 0.99}], "seed": 0}


def test_audit_yaml_of_a_skops_text_pipeline_needs_no_spec(files: dict[str, Path]) -> None:
    from sparring.audit import parse_threat_model
    from sparring.audit.runner import load_system

    # old: "loading tox.skops (skops file) needs an input spec: pass spec=InputSpec(shape=...": text has no shape
    target, attacker, x, y = load_system(parse_threat_model(_tm(str(files["skops"]), files["csv"])))
    assert attacker is target
    assert isinstance(target, SklearnTextTarget) and target.class_names == tuple(CLASSES)
    assert x == [t for t, _ in _rows()] and y.tolist() == [CLASSES.index(c) for _, c in _rows()]
    declared = parse_threat_model(_tm(str(files["skops"]), files["csv"], classes=CLASSES, text_column="message",
                                      label_column="label"))
    assert load_system(declared)[3].tolist() == y.tolist()
    with pytest.raises(LabelError, match="'threat'"):  # a label the declared classes do not have
        load_system(parse_threat_model(_tm(f"{files['module']}:score", files["csv"],
                                           classes=["ok", "toxic", "spam"])))


def test_audit_yaml_of_a_url_says_text_or_spec(files: dict[str, Path]) -> None:
    from sparring.audit import parse_threat_model
    from sparring.audit.runner import load_system

    # old: "system.spec (an InputSpec JSON file) is needed for an http(s) endpoint"
    with pytest.raises(ParameterError, match=r"system\.text: \{classes"):
        load_system(parse_threat_model(_tm("http://127.0.0.1:9/moderate", files["csv"])))


def _audit_cli(tm: dict[str, Any], out: Path) -> dict[str, Any]:
    """``sparring audit`` on ``tm`` written as YAML; the gates of report.json by metric."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    (out / "tm.yaml").write_text(yaml.safe_dump(tm), encoding="utf-8")
    res = CliRunner().invoke(build_cli(), ["audit", str(out / "tm.yaml"), "--out", str(out / "report"),
                                           "--no-progress", "--format", "json,html"], env={"MOD_TOKEN": TOKEN})
    assert res.exit_code == 0, res.output
    report = (out / "report" / "report.json").read_text(encoding="utf-8")
    assert TOKEN not in report
    gates = {g["metric"]: g for g in json.loads(report)["gates"]}
    assert all(g["status"] == "pass" for g in gates.values()), gates
    page = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert TOKEN not in page
    gates["html"] = page
    return gates


@pytest.fixture(scope="module")
def skops_audit(files: dict[str, Path]) -> dict[str, Any]:
    return _audit_cli(_tm(str(files["skops"]), files["csv"], n=5), files["dir"] / "audit-skops")


def test_sparring_audit_cli_on_a_skops_text_pipeline(skops_audit: dict[str, Any]) -> None:
    assert skops_audit["clean_accuracy"]["value"] == 1.0
    assert 0 < skops_audit["text_evasion_rate"]["value"] < 1
    page = skops_audit["html"]
    assert "per class" in page and "toxic" in page and "evasions now read as" in page  # multi-class report


def test_sparring_audit_cli_on_an_http_moderation_api(files: dict[str, Path], endpoint: tuple[str, _Moderation],
                                                      skops_audit: dict[str, Any], tmp_path: Path) -> None:
    url, srv = endpoint
    gates = _audit_cli(_tm(url, files["csv"], n=5, classes=CLASSES, input_key="texts", output_key="probs",
                           headers={"Authorization": "Bearer ${MOD_TOKEN}"}, retries=0), tmp_path)
    assert srv.requests > 0 and srv.unauthorised == 0
    assert gates["clean_accuracy"]["value"] == 1.0
    # the same model on disk and behind the API: the same evasions
    assert gates["text_evasion_rate"]["value"] == skops_audit["text_evasion_rate"]["value"]


def test_init_template_for_a_text_pipeline_declares_classes_and_no_spec(files: dict[str, Path]) -> None:
    import yaml

    from sparring.audit import parse_threat_model
    from sparring.audit.template import threat_model_template
    from sparring.audit.template_text import text_threat_model_template

    text = threat_model_template(str(files["skops"]), data=str(files["csv"]), n=200, path="tox.yaml")
    assert text is not None and "sparring audit tox.yaml" in text and "{this file}" not in text
    tm = parse_threat_model(yaml.safe_load(text))
    assert tm.system.spec is None and tm.system.text is not None and tm.system.text.classes == CLASSES
    assert tm.system.data.n == len(_rows())  # the rows there are, not 200
    assert [g.min for g in tm.gates if g.metric == "clean_accuracy"] == [0.98]  # measured 1.0, minus 0.02
    assert text_threat_model_template("digits-cnn") is None  # not a text model: the tensor template


def test_sparring_init_cli_on_text_models(files: dict[str, Path], endpoint: tuple[str, _Moderation],
                                               tmp_path: Path) -> None:
    import yaml

    url, _ = endpoint
    out = tmp_path / "tm.yaml"
    code, text = _cli("init", "--model", url, "--output", str(out))
    assert code == 3 and "system.text" in text and "system.spec" in text  # old: "system.spec ... is needed"
    code, text = _cli("init", "--model", url, "--classes", ",".join(CLASSES), "--input-key", "texts",
                      "--output-key", "probs", "--http-header", "Authorization: Bearer ${MOD_TOKEN}", "--data",
                      str(files["csv"]), "--output", str(out), env={"MOD_TOKEN": TOKEN})
    assert code == 0, text
    written = out.read_text(encoding="utf-8")
    assert TOKEN not in written and "Bearer ${MOD_TOKEN}" in written and "clean accuracy 1.0000" in written
    tm = yaml.safe_load(written)
    assert tm["system"]["text"]["input_key"] == "texts" and tm["system"]["text"]["classes"] == CLASSES
    code, text = _cli("init", "--model", str(files["skops"]), "--data", str(files["csv"]), "--text-col", "message",
                      "--label-col", "label", "--output", str(out), "--force")
    assert code == 0, text
    tm = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert tm["system"]["text"]["classes"] == CLASSES and tm["system"]["text"]["text_column"] == "message"
    assert "spec" not in tm["system"]


def test_http_api_with_more_classes_than_declared_asks_for_classes(endpoint: tuple[str, _Moderation]) -> None:
    url, _ = endpoint
    t = load_text_target(url, headers={"Authorization": f"Bearer {TOKEN}"}, input_key="texts", output_key="probs",
                         retries=0)
    with pytest.raises(EndpointError, match="--classes"):
        t.predict(["hello"])


def test_attack_text_cli_targeted_at_a_named_class(files: dict[str, Path]) -> None:
    code, out = _cli("attack-text", "deepwordbug", "--model", str(files["skops"]), "--data", str(files["csv"]),
                     "--target-class", "ok", "--max-chars", "8", "--json")
    assert code == 0, out
    s = json.loads(out)
    assert s["params"]["target_class"] == 0 and "ok" not in s["per_class"]  # messages already 'ok' left out
    assert s["n"] == len(THREAT) + len(TOXIC)
    moved = {k for c in s["per_class"].values() for k in c["moved_to"]}
    assert moved <= {"ok"} and s["success_rate"] > 0
    code, out = _cli("attack-text", "deepwordbug", "--model", str(files["skops"]), "--data", str(files["csv"]),
                     "--target-class", "benign")
    assert code == 3 and "'benign'" in out


def test_attack_text_cli_reads_a_tsv_of_label_names_first(files: dict[str, Path], tmp_path: Path) -> None:
    tsv = tmp_path / "tox.tsv"  # the 'toxic<TAB>msg' lines; old: the whole line was the message, label 1
    tsv.write_text("".join(f"{c}\t{t}\n" for t, c in _rows()), encoding="utf-8")
    code, out = _cli("attack-text", "deepwordbug", "--model", str(files["skops"]), "--data", str(tsv),
                     "--max-chars", "2", "--json")
    assert code == 0, out
    s = json.loads(out)
    assert s["n"] == len(_rows()) and s["clean_accuracy"] == 1.0
    assert [s["per_class"][c]["n"] for c in CLASSES] == [len(OK), len(THREAT), len(TOXIC)]


def test_audit_data_errors_name_the_yaml_keys(files: dict[str, Path]) -> None:
    from sparring.audit import parse_threat_model
    from sparring.audit.runner import load_system
    from sparring.errors import DataLoadError

    with pytest.raises(DataLoadError, match=r"Fix system\.text\.text_column") as info:
        load_system(parse_threat_model(_tm(str(files["skops"]), files["csv"], text_column="msg")))
    assert "--" not in str(info.value)
    with pytest.raises(LabelError, match=r"\(system\.text\.classes\)"):
        load_system(parse_threat_model(_tm(f"{files['module']}:score", files["csv"], classes=["ok", "toxic", "x"])))
    with pytest.raises(DataLoadError, match=r"system\.text\.text_column and label_column"):
        load_system(parse_threat_model(_tm(str(files["skops"]), files["csv"], label_column="message")))


def test_joblib_pipeline_and_entry_point_from_the_cli_and_yaml_give_the_skops_numbers(
        files: dict[str, Path], skops_audit: dict[str, Any], tmp_path: Path) -> None:
    """The same pipeline saved with joblib (behind --trust-pickle / system.trust_pickle) and served by a
    ``module:callable`` entry point (a file path, so no sys.path set-up) gives the skops file's numbers, from
    ``sparring attack-text`` and from ``sparring audit``; the joblib file is refused without the flag."""
    args = ["--data", str(files["csv"]), "--max-chars", "4", "--json"]
    _, ref = _cli("attack-text", "deepwordbug", "--model", str(files["skops"]), *args)
    code, out = _cli("attack-text", "deepwordbug", "--model", str(files["joblib"]), *args)
    assert code != 0 and "--trust-pickle" in out, out
    code, out = _cli("attack-text", "deepwordbug", "--model", str(files["joblib"]), "--trust-pickle", *args)
    assert code == 0, out
    entry = f"{files['module']}:score"
    code, via_entry = _cli("attack-text", "deepwordbug", "--model", entry, "--classes", ",".join(CLASSES), *args)
    assert code == 0, via_entry
    for got in (json.loads(out), json.loads(via_entry)):
        want = json.loads(ref)
        assert {k: got[k] for k in ("n", "clean_accuracy", "attack_success_rate", "per_class")} == \
               {k: want[k] for k in ("n", "clean_accuracy", "attack_success_rate", "per_class")}
    pickled = _tm(str(files["joblib"]), files["csv"], n=5)
    pickled["system"]["trust_pickle"] = True
    by_entry = _tm(entry, files["csv"], n=5, classes=CLASSES)
    for tm, name in ((pickled, "joblib"), (by_entry, "entry")):
        gates = _audit_cli(tm, tmp_path / name)
        for metric in ("clean_accuracy", "text_evasion_rate"):
            assert gates[metric]["value"] == skops_audit[metric]["value"], (name, metric)
