"""Text evasion check: the character attacks a spammer would use against a text classifier, with and without the
Unicode-normalising defence.

Planned for text systems (:class:`~sparring.targets.text.TextTarget`; ``system.model`` ``spam-tfidf-logreg`` or
``spam-minilm``) whose API returns scores. Attacked messages: the audit messages the model classifies correctly, of
class 1 for a binary model (spam: the class whose senders want to pass), of every class otherwise. Attacks:

* Bad Characters — homoglyphs and invisible characters (Boucher, Shumailov, Anderson and Papernot 2022);
* typos — DeepWordBug's swaps, keyboard-neighbour substitutions, deletions, insertions (Gao et al. 2018);
* reorder — stretches stored backwards behind bidi overrides, displayed unchanged (Boucher et al. 2022,
  "Reorderings"), then Bad Characters with the characters left;

each at the effort's edit budgets (edited characters per message), against the model as it is and behind
:func:`sparring.defenses.preprocess.text.normalize` (display order, NFKC, confusables to ASCII,
invisible and bidi characters stripped). ``attacker.query_budget`` bounds the queries per message. Each (attack,
defence, budget) is one step. Gate metric ``text_evasion_rate``: the worst attack at a ``max_chars`` budget
(``method: none``, the default, or ``normalize`` picks the defence); a gate's budget is added to the effort's.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from sparring.audit.findings import Finding
from sparring.audit.registry import (
    Measurement,
    PlanContext,
    ReportSection,
    ReportTable,
    RunContext,
    Skip,
    Step,
    StepResult,
    register_check,
)
from sparring.targets.spec import Access

__all__ = ["BUDGETS", "TextEvasion"]

BUDGETS: dict[str, list[int | None]] = {"quick": [3, 12], "standard": [1, 3, 6, 12], "thorough": [1, 3, 6, 12, None]}
"""Edit budgets (most edited characters per message; ``None``: no limit) by effort."""

QUERIES = {"quick": 300, "standard": 1000, "thorough": 3000}
"""Default queries per attacked message, by effort (``attacker.query_budget`` overrides)."""

ATTACKS = ("bad-characters", "typos", "reorder")
DEFENCES = ("none", "normalize")

RECOMMEND_UNICODE = ("Normalise every input before the model sees it: sparring.defenses.preprocess.text.normalize "
                     "(display order, NFKC, Unicode confusables to ASCII, invisible and bidi-control characters "
                     "stripped), e.g. "
                     "DefendedTextTarget(target, normalize) or the same function in your serving code.")
RECOMMEND_TYPOS = ("Train on attack outputs (sparring.defenses.training.text.train_robust_text) and add a spelling "
                   "/ de-leet step (sparring.defenses.preprocess.text.SpellingCorrector); typos survive Unicode "
                   "normalisation.")


def _budget_name(b: int | None) -> str:
    return "unlimited" if b is None else str(b)


@register_check
class TextEvasion:
    name = "text-evasion"
    threat = "text"
    needs = Access.SCORES
    inputs = ("text",)

    def plan(self, ctx: PlanContext) -> list[Step] | Skip:
        tm = ctx.threat_model
        if tm.exposure.output == "labels":
            return Skip(self.name, "text", "the API returns labels only; the text attacks here search by scores")
        q = tm.attacker.query_budget or QUERIES[tm.effort]
        budgets = list(BUDGETS[tm.effort])
        budgets += sorted({g.max_chars for g in tm.gates if g.metric == "text_evasion_rate"
                           and g.max_chars is not None and g.max_chars not in budgets})
        return [Step(id=f"text/{attack}/{defence}/{_budget_name(b)}", check=self.name, threat="text",
                     params={"attack": attack, "defence": defence, "max_chars": b, "max_queries": q},
                     reason=f"text model: {attack} with at most {_budget_name(b)} edited characters and {q} queries "
                            f"per message, {'as it is' if defence == 'none' else 'behind ' + defence}")
                for attack in ATTACKS for defence in DEFENCES for b in budgets]

    def run(self, step: Step, ctx: RunContext) -> StepResult:
        from sparring.attacks.text import BidiReorder, Constraints, TextAttack, bad_characters, deepwordbug
        from sparring.defenses.preprocess.text import DefendedTextTarget, normalize
        from sparring.targets.text import TextTarget, validate_texts

        p = step.params
        target: Any = ctx.attacker_target
        assert isinstance(target, TextTarget)
        texts, y = validate_texts(ctx.x), ctx.y.cpu()
        if p["defence"] == "normalize":
            target = DefendedTextTarget(target, normalize)
        attack: TextAttack
        if p["attack"] == "reorder":
            attack = BidiReorder(constraints=Constraints(max_chars=p["max_chars"]), max_queries=p["max_queries"],
                                 then=bad_characters(max_chars=None, max_queries=p["max_queries"]))
        else:
            make = bad_characters if p["attack"] == "bad-characters" else deepwordbug
            attack = make(max_chars=p["max_chars"], max_queries=p["max_queries"])
        chosen = torch.ones_like(y, dtype=torch.bool) if target.n_classes != 2 else y == 1
        idx = chosen.nonzero().flatten().tolist()
        common = {"attack": p["attack"], "defence": p["defence"], "max_chars": p["max_chars"]}
        result = StepResult(step_id=step.id, check=self.name, threat="text", params=dict(p))
        if not idx:
            result.notes.append("no audit message of class 1 to attack (raise system.data.n)")
            return result
        res = attack(target, [texts[i] for i in idx], y[idx])
        s = res.summary()
        result.measurements = [
            Measurement("text_evasion_rate", res.attack_success_rate, common),
            Measurement("text_clean_accuracy", float(res.clean_correct.float().mean()), common),
        ] + [Measurement(k, float(s[k]), common) for k in ("mean_edited_chars", "mean_queries") if s[k] is not None]
        result.per_point = {"index": idx, "clean_correct": res.clean_correct.tolist(),
                            "success": res.success.tolist(), "edited_chars": res.edited_chars.tolist()}
        result.examples = {"n_attacked": int(res.clean_correct.sum()),
                           "side_by_side": [{"original": e["original"], "adversarial": e["adversarial"],
                                             "edited_chars": e["edited_chars"],
                                             "classes": f"{e['label']} -> {e['adversarial_label']}"}
                                            for e in res.examples(3)],
                           "per_class": s["per_class"]}
        result.cost = {"queries": res.cost.queries, "gradients": 0, "seconds": round(res.cost.seconds, 6)}
        if res.budget_exhausted:
            result.notes.append("the target's query budget ran out: partial result")
        return result

    def findings(self, tm: Any, results: list[StepResult]) -> list[Finding]:
        out = []
        for attack, title, rec in (("bad-characters", "Unicode homoglyphs and invisible characters evade the filter",
                                    RECOMMEND_UNICODE),
                                   ("typos", "Typos (character swaps, deletions, insertions) evade the filter",
                                    RECOMMEND_TYPOS),
                                   ("reorder", "Bidi reordering (text stored backwards, displayed unchanged) evades "
                                    "the filter", RECOMMEND_UNICODE)):
            for defence in DEFENCES:
                rows = [r for r in results if r.params.get("attack") == attack and r.params.get("defence") == defence
                        and r.value("text_evasion_rate") is not None]
                if not rows:
                    continue
                worst = max(rows, key=lambda r: float(r.value("text_evasion_rate") or 0.0))
                rate = float(worst.value("text_evasion_rate") or 0.0)
                if rate == 0:
                    continue
                severity: Literal["high", "medium", "low"] = ("high" if rate >= 0.5 else "medium" if rate >= 0.1
                                                              else "low")
                where = "" if defence == "none" else " even behind Unicode normalisation"
                out.append(Finding(
                    id=f"text:{attack}:{defence}", threat="text", severity=severity,
                    title=f"{title}{where}: {rate:.0%} of attacked messages with at most "
                          f"{_budget_name(worst.params['max_chars'])} edited characters",
                    evidence={"evasion_rate": {_budget_name(r.params["max_chars"]): r.value("text_evasion_rate")
                                               for r in rows},
                              "mean_edited_chars": worst.value("mean_edited_chars"),
                              "n_attacked": worst.examples.get("n_attacked"),
                              "example": (worst.examples.get("side_by_side") or [None])[0]},
                    recommendation=RECOMMEND_TYPOS if defence == "normalize" and attack != "typos" else rec,
                    steps=[r.step_id for r in rows]))
        return out

    def section(self, results: list[StepResult]) -> ReportSection | None:
        rows: list[list[Any]] = []
        examples: list[list[Any]] = []
        per_class: list[list[Any]] = []
        for r in results:
            if r.value("text_evasion_rate") is None:
                continue
            p = r.params
            rows.append([p["attack"], p["defence"], _budget_name(p["max_chars"]), r.examples.get("n_attacked"),
                         r.value("text_evasion_rate"), r.value("mean_edited_chars"), r.value("mean_queries")])
            examples += [[p["attack"], p["defence"], e["edited_chars"], e.get("classes", ""), e["original"],
                          e["adversarial"]] for e in r.examples.get("side_by_side", [])[:2]]
            classes = r.examples.get("per_class") or {}
            if len(classes) > 1:  # a multi-class model: which classes evade, and what they are read as
                per_class += [[p["attack"], p["defence"], _budget_name(p["max_chars"]), name,
                               round(c["clean_accuracy"] * c["n"]), c["attack_success_rate"],
                               ", ".join(f"{k}: {v}" for k, v in c["moved_to"].items())]
                              for name, c in classes.items()]
        if not rows:
            return None
        return ReportSection(
            title="Text evasion: homoglyphs, invisible characters, reordering and typos",
            text="Correctly classified messages of the attacked classes (spam for a binary filter, every class of a "
                 "multi-class model) were edited until "
                 "the model changed its decision, within each budget of edited characters, against the model as "
                 "it is and behind Unicode normalisation. Examples: edited words in [[double brackets]], non-ASCII "
                 "and invisible characters written <U+XXXX>.",
            tables=[ReportTable("success rate vs edit budget", [
                        "attack", "defence", "max edited chars", "attacked", "evasion rate", "mean edited chars",
                        "mean queries"], rows),
                    *([ReportTable("per class", ["attack", "defence", "max edited chars", "class", "attacked",
                                                 "evasion rate", "evasions now read as"], per_class)]
                      if per_class else []),
                    ReportTable("examples (original vs adversarial)", [
                        "attack", "defence", "edited chars", "classes", "original", "adversarial"], examples[:12])],
        )
