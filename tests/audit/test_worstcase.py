"""One per-point worst case everywhere: gates, findings, curves and tables read the same number at each budget, over
every attack that ran (white-box, black-box, retry); unfinished points are unknown; text gates take the union."""

from __future__ import annotations

from typing import Any

import pytest

from sparring.audit import parse_threat_model
from sparring.audit.findings import evaluate_gates, find, robust_curves
from sparring.audit.registry import Measurement, StepResult
from sparring.audit.worstcase import text_union, worst_case

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, many small steps: a 2nd thread only spins

def _evasion(step_id: str, check: str, attack: str, eps: float, robust: list[bool], *,
             unknown: list[bool] | None = None, kind: str | None = None) -> StepResult:
    params: dict[str, Any] = {"attack": attack, "norm": "linf", "eps": eps}
    if kind is not None:
        params["kind"] = kind
    pp: dict[str, list[Any]] = {"robust": robust, "clean_correct": [True] * len(robust)}
    if unknown is not None:
        pp["unknown"] = unknown
    return StepResult(step_id, check, "evasion", params, measurements=[
        Measurement("robust_accuracy", sum(robust) / len(robust))], per_point=pp)


def _tm(*gates: dict[str, Any]) -> Any:
    return parse_threat_model({"system": {"model": "digits-cnn"}, "attacker": {"evasion": [
        {"norm": "linf", "eps": [0.05, 0.1]}]}, "gates": list(gates)})


def _baseline(n: int) -> StepResult:
    return StepResult("baseline/clean", "clean-accuracy", "baseline", {},
                      measurements=[Measurement("clean_accuracy", 1.0)], per_point={"correct": [True] * n})


def test_a_black_box_attack_that_beats_the_gradient_attacks_reads_the_same_in_gate_finding_and_curve() -> None:
    # The case: a rounding model masks PGD (all 8 robust), Square on the first 4 points breaks 3.
    n = 8
    results = [
        _baseline(n),
        _evasion("evasion/pgd/linf/0.05", "evasion-gradient", "pgd", 0.05, [True] * n),
        _evasion("evasion/pgd/linf/0.1", "evasion-gradient", "pgd", 0.1, [True] * n),
        _evasion("masking/blackbox/linf/0.1", "gradient-masking", "square", 0.1, [False, False, False, True],
                 kind="blackbox"),
        _evasion("adaptive/square/linf/0.05", "adaptive-retry", "square", 0.05, [False] + [True] * (n - 1)),
    ]
    results[-1].params["gradient_free"] = "square"
    tm = _tm({"metric": "robust_accuracy", "norm": "linf", "eps": 0.1, "min": 0.5},
             {"metric": "robust_accuracy", "norm": "linf", "eps": 0.05, "min": 0.5})
    gates = evaluate_gates(tm, results)
    assert [g.value for g in gates] == [5 / 8, 7 / 8]
    assert "masking/blackbox/linf/0.1" in gates[0].steps and "adaptive/square/linf/0.05" in gates[1].steps
    finding = next(f for f in find(tm, results, gates) if f.id == "evasion:linf")
    assert finding.evidence["worst_case"] == [[0.05, 7 / 8], [0.1, 5 / 8]]
    assert "→ 0.88 at eps 0.05, 0.62 at eps 0.1" in finding.title and finding.severity == "high"
    curves = robust_curves(results)["linf"]
    assert curves["worst case"] == [(0.05, 7 / 8), (0.1, 5 / 8)]
    assert curves["square (first 4 points)"] == [(0.1, 0.25)]  # a prefix attack is a labelled line
    assert curves["square (retry)"] == [(0.05, 7 / 8)]  # the retry's Square is its own line


def test_a_point_left_unfinished_by_the_query_budget_is_unknown_a_finding_and_an_unmeasured_gate() -> None:
    n = 4
    results = [
        _baseline(n),
        _evasion("evasion/square/linf/0.1", "evasion-scores", "square", 0.1, [False, False, False, True],
                 unknown=[False, True, True, False]),
        _evasion("evasion/square/linf/0.05", "evasion-scores", "square", 0.05, [True, True, True, True]),
    ]
    wc = worst_case(results, "linf", 0.1)
    assert wc is not None and wc.robust == (False, False, False, True) and wc.unknown == (False, True, True, False)
    assert (wc.accuracy, wc.upper) == (0.25, 0.75)
    tm = _tm({"metric": "robust_accuracy", "norm": "linf", "eps": 0.1, "min": 0.2},
             {"metric": "robust_accuracy", "norm": "linf", "eps": 0.05, "min": 0.2})
    gates = evaluate_gates(tm, results)
    assert gates[0].status == "not-evaluated" and not gates[0].passed  # 0.25 >= 0.2 would pass: unknown fails it
    assert "2 of 4 points are unknown" in gates[0].message and "between 0.2500 and 0.7500" in gates[0].message
    assert gates[1].status == "pass"
    findings = {f.id: f for f in find(tm, results, gates)}
    budget = findings["budget:evasion/square/linf/0.1"]
    assert "ran out of queries on 2 of 4 points" in budget.title and budget.evidence["unknown_points"] == [1, 2]
    assert findings["gate:" + gates[0].gate].title.endswith("(unmeasured)")
    assert findings["evasion:linf"].evidence["unknown_points"] == [[0.1, 2]]


def test_a_point_broken_by_one_attack_is_broken_even_if_another_left_it_unknown() -> None:
    results = [
        _evasion("evasion/square/linf/0.1", "evasion-scores", "square", 0.1, [False, True], unknown=[True, False]),
        _evasion("evasion/pgd/linf/0.1", "evasion-gradient", "pgd", 0.1, [False, True]),
    ]
    wc = worst_case(results, "linf", 0.1)
    assert wc is not None and wc.unknown == (False, False) and wc.robust == (False, True)


def _text(step_id: str, attack: str, success: list[bool]) -> StepResult:
    n = len(success)
    return StepResult(step_id, "text-evasion", "text", {"attack": attack, "defence": "none", "max_chars": 3},
                      measurements=[Measurement("text_evasion_rate", sum(success) / n)],
                      per_point={"index": list(range(n)), "clean_correct": [True] * n, "success": success})


def test_text_gate_takes_the_per_message_union_over_attacks() -> None:
    # Issue 22.2: Bad Characters breaks messages {0, 1}, typos break {2, 3}: an attacker trying both evades on all.
    results = [_text("text/bad-characters/none/3", "bad-characters", [True, True, False, False]),
               _text("text/typos/none/3", "typos", [False, False, True, True])]
    tm = parse_threat_model({"system": {"model": "spam-tfidf-logreg"},
                             "gates": [{"metric": "text_evasion_rate", "max_chars": 3, "max": 0.6}]})
    (gate,) = evaluate_gates(tm, results)
    assert gate.value == 1.0 and gate.status == "fail"  # the worst single attack reads 0.5 and passed
    assert sorted(gate.steps) == ["text/bad-characters/none/3", "text/typos/none/3"]
    tu = text_union(results, 3, "none")
    assert tu is not None and (tu.n_attacked, tu.n_evaded) == (4, 4)


def test_text_union_counts_only_messages_every_step_attacked_correctly_classified() -> None:
    a = _text("text/a/none/3", "a", [True, False, False])
    b = _text("text/b/none/3", "b", [False, False, True])
    b.per_point["clean_correct"] = [True, True, False]  # message 2 was misclassified clean: not attacked
    tu = text_union([a, b], 3, "none")
    assert tu is not None and (tu.n_attacked, tu.n_evaded) == (2, 1) and tu.rate == pytest.approx(0.5)


def test_an_audit_whose_target_runs_out_of_queries_reports_unknown_points_and_an_unmeasured_gate(
    tmp_path: Any,
) -> None:
    import torch
    from torch import nn

    from sparring.audit import run_audit
    from sparring.data import load_digits
    from sparring.targets import Access, TorchTarget

    ds = load_digits(8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=5e-2)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(ds.x_train), ds.y_train).backward()
        opt.step()
    n = 8  # the clean pass takes 8 queries; Square gets 8 x 40 queries but the target allows 8 + 60 in all
    target = TorchTarget(model.eval(), ds.spec, access=Access.SCORES, query_budget=n + 60)
    tm = parse_threat_model({"system": {"model": "a model trained in the test", "data": {"n": n}},
                             "attacker": {"knowledge": "black-box", "query_budget": 40,
                                          "evasion": [{"norm": "linf", "eps": [0.02]}]}, "effort": "quick",
                             "gates": [{"metric": "robust_accuracy", "norm": "linf", "eps": 0.02, "min": 0.0}]})
    audit = run_audit(tm, tmp_path, target=target, data=(ds.x_test, ds.y_test))
    step = next(r for r in audit.results if r.step_id == "evasion/square/linf/0.02")
    assert step.status == "done" and any(step.per_point["unknown"])
    (gate,) = audit.gates
    assert gate.status == "not-evaluated" and "unknown" in gate.message  # min 0.0 would pass if it were measured
    assert "budget:evasion/square/linf/0.02" in {f.id for f in audit.findings}
