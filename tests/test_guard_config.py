"""guard.yaml is strict: unknown keys are refused with the key and the allowed ones named."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparring.errors import GuardConfigError, ParameterError
from sparring.guard.config import load_config, parse_config

pytest.importorskip("pydantic")

_OK = {"model": "digits-cnn",
       "detectors": [{"kind": "mahalanobis", "policy": "reject", "fit": {"data": "train"},
                      "calibrate": {"data": "test", "stop": 100, "fpr": 0.01}}],
       "store": {"url": "sqlite:///g.db"}}


def test_a_full_config_parses_with_defaults() -> None:
    cfg = parse_config(_OK)
    assert cfg.model.source == "digits-cnn" and cfg.detectors[0].label == "mahalanobis"
    assert cfg.prada.delta == 0.9 and cfg.queue.max_size == 64 and cfg.store.on_error == "fail-closed"


@pytest.mark.parametrize(("patch", "named"), [
    ({"modle": "digits-cnn"}, "modle: unknown key; allowed keys here: model, detectors"),
    ({"prada": {"deltaa": 0.8}}, "prada.deltaa: unknown key; allowed keys here: enabled, delta, min_queries"),
    ({"detectors": [{"kind": "energy", "policy": "flag", "threshold": 1.0, "polcy": "x"}]},
     "detectors.0.polcy: unknown key; allowed keys here: kind, policy, name, fit, combine, calibrate, threshold"),
    ({"queue": {"max_size": 0}}, "queue.max_size: got 0"),
    ({"detectors": [{"kind": "energy", "policy": "block", "threshold": 1.0}]}, "detectors.0.policy: got 'block'"),
    ({"store": {"url": "mysql://x"}}, "store.url must be sqlite:///path/to/guard.db or postgresql://"),
])
def test_bad_keys_and_values_are_named(patch: dict[str, object], named: str) -> None:
    data = {**_OK, **patch}
    if "modle" in patch:
        data.pop("model")
    with pytest.raises(GuardConfigError) as err:
        parse_config(data)
    assert named in str(err.value)
    assert isinstance(err.value, ParameterError)  # exit code 3 on the command line


def test_model_rules() -> None:
    with pytest.raises(GuardConfigError, match="exactly one of source"):
        parse_config({"model": {"source": "digits-cnn", "upstream": "http://127.0.0.1:1/predict"}})
    with pytest.raises(GuardConfigError, match=r"model\.spec is required with upstream"):
        parse_config({"model": {"upstream": "http://127.0.0.1:1/predict"}})
    with pytest.raises(GuardConfigError, match="mahalanobis needs fit"):
        parse_config({"model": "digits-cnn", "detectors": [{"kind": "mahalanobis", "threshold": 3.0}]})
    with pytest.raises(GuardConfigError, match="give calibrate"):
        parse_config({"model": "digits-cnn", "detectors": [{"kind": "energy"}]})
    with pytest.raises(GuardConfigError, match="names must be unique"):
        parse_config({"model": "digits-cnn", "detectors": [{"kind": "energy", "threshold": 1.0}] * 2})


def test_yaml_file_errors_and_password_redaction(tmp_path: Path) -> None:
    p = tmp_path / "guard.yaml"
    p.write_text("model: digits-cnn\nstore: {url: 'postgresql://guard:s3cret@127.0.0.1:5432/g'}\n")
    cfg = load_config(p)
    assert cfg.base_dir == str(tmp_path)
    assert "s3cret" not in str(cfg.public()) and cfg.public()["store"]["url"].startswith("postgresql://guard:***@")
    p.write_text("model: [digits-cnn\n")
    with pytest.raises(GuardConfigError, match="not valid YAML \\(line 2"):
        load_config(p)
    with pytest.raises(GuardConfigError, match="no such guard config file"):
        load_config(tmp_path / "missing.yaml")
