"""Threat model parsing: valid files load; every invalid key or value is named with what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sparring.audit import load_threat_model, parse_threat_model
from sparring.cli.audit import default_threat_model_path
from sparring.errors import ThreatModelError
from tests.audit.conftest import SMALL


def test_default_threat_model_is_valid() -> None:
    tm = load_threat_model(default_threat_model_path())
    assert tm.system.model == "digits-cnn" and tm.gates and tm.budgets()


def test_small_parses_with_defaults_filled() -> None:
    tm = parse_threat_model(SMALL)
    assert tm.exposure.output == "scores" and tm.attacker.knowledge == "white-box"
    assert tm.budgets() == [("linf", 0.05), ("linf", 0.15)]


def test_gate_budgets_join_the_evasion_budgets() -> None:
    tm = parse_threat_model({**SMALL, "gates": [{"metric": "robust_accuracy", "norm": "l2", "eps": 1.0, "min": 0.5}]})
    assert ("l2", 1.0) in tm.budgets()


def test_spec_hash_ignores_layout_but_not_values(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump(SMALL, sort_keys=True))
    b.write_text(yaml.safe_dump(SMALL, sort_keys=False, default_flow_style=True))
    assert load_threat_model(a).spec_hash() == load_threat_model(b).spec_hash()
    assert parse_threat_model({**SMALL, "seed": 1}).spec_hash() != load_threat_model(a).spec_hash()
    # spelling out a default (seed 0, system.trust_pickle false) is the same threat model
    explicit = {**SMALL, "system": {**SMALL["system"], "trust_pickle": False}}
    assert parse_threat_model(explicit).spec_hash() == load_threat_model(a).spec_hash()


@pytest.mark.parametrize(
    ("change", "must_say"),
    [
        ({"exposure": {"output": "probs"}}, ["exposure.output", "'probs'", "'scores'", "'top-k'", "'labels'"]),
        ({"attacker": {"knowledge": "grey"}}, ["attacker.knowledge", "'grey'", "'white-box'"]),
        ({"attacker": {"evasoin": []}}, ["attacker.evasoin", "unknown key", "evasion"]),
        ({"attacker": {"evasion": [{"norm": "l1", "eps": [1]}]}}, ["attacker.evasion.0.norm", "'l1'", "'linf'"]),
        ({"attacker": {"evasion": [{"norm": "linf", "eps": [-0.1]}]}}, ["attacker.evasion.0.eps", "> 0"]),
        ({"gates": [{"metric": "robustness", "min": 0.5}]}, ["gates.0.metric", "'robustness'", "robust_accuracy"]),
        ({"gates": [{"metric": "robust_accuracy", "norm": "linf", "min": 0.5}]}, ["gates.0", "needs 'eps'"]),
        ({"gates": [{"metric": "clean_accuracy"}]}, ["gates.0", "exactly one of min, max or max_drop"]),
        ({"effort": "max"}, ["effort", "'max'", "'thorough'"]),
        ({"system": {"data": {"n": 10}}}, ["system.model", "required"]),
        ({"exposure": {"output": "top-k"}}, ["exposure", "top_k"]),
    ],
)
def test_invalid_values_name_key_value_and_allowed(change: dict, must_say: list[str]) -> None:
    with pytest.raises(ThreatModelError) as e:
        parse_threat_model({**SMALL, **change}, source="t.yaml")
    msg = str(e.value)
    assert "t.yaml" in msg
    for part in must_say:
        assert part in msg, (part, msg)


def test_unsupported_schema_version() -> None:
    with pytest.raises(ThreatModelError, match="schema_version 2"):
        parse_threat_model({**SMALL, "schema_version": 2})


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ThreatModelError, match="sparring init"):
        load_threat_model(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("system:\n  model: [unclosed\n")
    with pytest.raises(ThreatModelError, match=r"not valid YAML \(line"):
        load_threat_model(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ThreatModelError, match="expected a mapping"):
        load_threat_model(listy)
