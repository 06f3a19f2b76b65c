"""Text attacks and defences on the SMS spam filters of the zoo (issue 8).

**What is attacked.** The first ``--n`` spam messages of the SMS Spam Collection test split (Almeida, Gómez Hidalgo
and Yamakami 2011; bundled, CC BY 4.0) that the model catches; the goal is to have them classified ham. Metrics:
attack success rate among caught spam, mean edited characters (Levenshtein distance in code points) and words per
broken message, mean MiniLM sentence similarity where measured, mean queries per message.

Sections (``--sections``):

* ``tfidf``: ``spam-tfidf-logreg`` against Bad Characters (homoglyph + invisible; Boucher et al. 2022) at budgets of
  3, 6 and unlimited edited characters, DeepWordBug (Gao et al. 2018), leetspeak/spacing; the same attacks against
  the Unicode-normalising defence and the normalise + de-leet/spelling defence; clean accuracy with and without each
  defence (whole test split); and the adaptive attack restricted to edits that survive each defence.
* ``robust``: robust training with augmentations (``sparring.defenses.training.text.train_robust_text``: per round
  (``--rounds``), ``--n-train`` training spam attacked with every character edit kind, the adversarial messages
  added as spam, the recipe refitted with ``fit_tfidf_logreg``), then the attacks re-run against the robust model.
* ``reorder``: bidi reordering (Boucher et al. 2022, Sec. III-C) alone and followed by Bad Characters, at 3, 6 and
  unlimited characters, against the model and against normalisation (plain and adaptive); run it with
  ``--sections reorder,bound --json benchmarks/results/text-reorder-cpu-1thread.json``.
* ``bound``: how much evidence must go before the model lets caught spam through (greedy whole-token deletions,
  whole-message reversal): why a few imperceptible characters cannot reach 90% on this model.
* ``minilm``: ``spam-minilm`` against TextFooler (Jin et al. 2020) at MiniLM similarity >= 0.8 (with side-by-side
  examples) and against Bad Characters. Needs the text extra; the first run embeds the dataset (minutes on a CPU;
  cached under ``$SPARRING_CACHE_DIR``).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_text.py --json benchmarks/results/text-cpu-1thread.json``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sparring.attacks.text import (
    BidiReorder,
    CharAttack,
    Constraints,
    TextAttack,
    TextAttackResult,
    TextFooler,
    bad_characters,
    deepwordbug,
    leetspeak,
    logical_distance,
    reverse_stretch,
)
from sparring.data.text import load_sms_spam, load_text_model
from sparring.defenses.preprocess.text import DefendedTextTarget, SpellingCorrector, normalize
from sparring.defenses.training.text import train_robust_text
from sparring.targets.text import TextTarget

ALL_KINDS = ("swap", "substitute", "delete", "insert", "leet", "spacing", "homoglyph", "invisible")


def caught_spam(target: TextTarget, n: int) -> list[str]:
    ds = load_sms_spam()
    spam = [t for t, y in zip(ds.x_test, ds.y_test.tolist(), strict=True) if y == 1]
    pred = target.predict(spam).tolist()
    return [t for t, p in zip(spam, pred, strict=True) if p == 1][:n]


def run(attack: TextAttack, target: TextTarget, texts: list[str], examples: int = 0, label: str = "") -> dict[str, Any]:
    t0 = time.perf_counter()
    res = attack(target, texts, [1] * len(texts))
    out = run_summary(res, t0, examples)
    print(f"  {label or attack.name:24s} {json.dumps({k: v for k, v in out.items() if k != 'examples'})}", flush=True)
    return out


def run_summary(res: TextAttackResult, t0: float, examples: int = 0) -> dict[str, Any]:
    s = res.summary()
    out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()
           if k in ("n", "attack_success_rate", "mean_edited_chars", "mean_edited_words", "mean_similarity",
                    "mean_queries")}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if examples:
        out["examples"] = res.examples(examples)
    return out


def tfidf_section(n: int) -> dict[str, Any]:
    ds = load_sms_spam()
    base = load_text_model("spam-tfidf-logreg")
    spell = SpellingCorrector.from_texts(ds.x_train)

    def normalize_spell(text: str) -> str:
        return spell(normalize(text))

    defences: dict[str, Callable[[str], str] | None] = {"none": None, "normalize": normalize,
                                                        "normalize+spelling": normalize_spell}
    texts = caught_spam(base, n)
    out: dict[str, Any] = {"n_caught_spam": len(texts), "clean_accuracy": {}, "attacks": {}}
    attacks: dict[str, Callable[[Callable[[str], str] | None], TextAttack]] = {
        "bad-characters<=3": lambda d: bad_characters(max_chars=3),
        "bad-characters<=6": lambda d: bad_characters(max_chars=6),
        "bad-characters": lambda d: bad_characters(max_chars=None),
        "deepwordbug<=6": lambda d: deepwordbug(max_chars=6),
        "leetspeak<=6": lambda d: leetspeak(max_chars=6),
        "adaptive-all-kinds": lambda d: CharAttack(ALL_KINDS, constraints=Constraints(), adaptive_to=d),
        "adaptive-all-kinds<=6": lambda d: CharAttack(ALL_KINDS, constraints=Constraints(max_chars=6), adaptive_to=d),
    }
    for dname, fn in defences.items():
        target = base if fn is None else DefendedTextTarget(base, fn)
        out["clean_accuracy"][dname] = round(target.accuracy(ds.x_test, ds.y_test), 4)
        print(f"defence {dname}: clean accuracy {out['clean_accuracy'][dname]}", flush=True)
        out["attacks"][dname] = {a: run(make(fn), target, texts, examples=2 if dname == "none" else 0, label=a)
                                 for a, make in attacks.items()
                                 if not (fn is None and a.startswith("adaptive"))}
    return out


def robust_section(n: int, n_train: int, rounds: int = 1) -> dict[str, Any]:
    """Robust training with attack-generated augmentations (``sparring.defenses.training.text.train_robust_text``):
    each round attacks ``n_train`` training spam messages with every character edit kind, adds the successful
    adversarial messages (labelled spam) to the training set and refits the same recipe; then the test spam is
    attacked again (the attacks re-run against the new model: adaptive)."""
    ds = load_sms_spam()
    base = load_text_model("spam-tfidf-logreg")
    t0 = time.perf_counter()
    trained = train_robust_text(ds.x_train, ds.y_train, attack=CharAttack(ALL_KINDS, constraints=Constraints()),
                                n_attacked=n_train, rounds=rounds, initial=base)
    robust, extra = trained.target, trained.augmented_texts
    out: dict[str, Any] = {"augmented_messages": len(extra), "augment_seconds": round(time.perf_counter() - t0, 1),
                           "rounds": [r.to_dict() for r in trained.history],
                           "clean_accuracy": round(robust.accuracy(ds.x_test, ds.y_test), 4)}
    print(f"robust training: +{len(extra)} messages, clean accuracy {out['clean_accuracy']}", flush=True)
    texts = caught_spam(robust, n)
    out["n_caught_spam"] = len(texts)
    out["attacks"] = {name: run(make(), robust, texts, label=name) for name, make in (
        ("bad-characters<=6", lambda: bad_characters(max_chars=6)),
        ("deepwordbug<=6", lambda: deepwordbug(max_chars=6)),
        ("leetspeak<=6", lambda: leetspeak(max_chars=6)),
        ("all-kinds<=6", lambda: CharAttack(ALL_KINDS, constraints=Constraints(max_chars=6))),
    )}
    return out


def reorder_section(n: int) -> dict[str, Any]:
    """Bidi reordering (Boucher et al. 2022, Sec. III-C) alone and followed by Bad Characters, against
    ``spam-tfidf-logreg`` with and without normalisation (which puts messages in display order), and adaptive to it.
    Also the Levenshtein distance of what is stored (``logical_distance``) beside the charged characters."""
    base = load_text_model("spam-tfidf-logreg")
    texts = caught_spam(base, n)
    defended = DefendedTextTarget(base, normalize)
    out: dict[str, Any] = {"n_caught_spam": len(texts)}
    attacks: dict[str, Callable[[], TextAttack]] = {
        "reorder<=3": lambda: BidiReorder(constraints=Constraints(max_chars=3)),
        "reorder+bad-characters<=3": lambda: BidiReorder(constraints=Constraints(max_chars=3),
                                                         then=bad_characters(max_chars=None)),
        "reorder+bad-characters<=6": lambda: BidiReorder(constraints=Constraints(max_chars=6),
                                                         then=bad_characters(max_chars=None)),
        "reorder": lambda: BidiReorder(),
    }
    for dname, target in (("none", base), ("normalize", defended)):
        out[dname] = {}
        for name, make in attacks.items():
            t0 = time.perf_counter()
            res = make()(target, texts, [1] * len(texts))
            row = run_summary(res, t0, examples=2 if dname == "none" else 0)
            broken = [i for i in range(res.n) if bool(res.broken[i])]
            row["mean_logical_distance"] = (round(sum(logical_distance(res, i) for i in broken) / len(broken), 1)
                                            if broken else None)
            print(f"  {dname:9s} {name:26s} {json.dumps({k: v for k, v in row.items() if k != 'examples'})}",
                  flush=True)
            out[dname][name] = row
    out["normalize"]["adaptive-reorder<=3"] = run(
        BidiReorder(constraints=Constraints(max_chars=3), adaptive_to=normalize), defended, texts,
        label="normalize adaptive-reorder<=3")
    return out


def bound_section(n: int, ks: tuple[int, ...] = (1, 2, 3, 6)) -> dict[str, Any]:
    """How much evidence must go before ``spam-tfidf-logreg`` lets caught spam through: greedily delete up to k
    whole whitespace-separated tokens (each step deletes the token whose removal lowers the spam score most, all
    candidates scored), and reverse the whole stored message (``RLO`` + reversed + ``PDF``, protected tokens
    included). A character edit inside one token can at most destroy that token's n-grams (its replacement
    n-grams are new, unweighted features), so deleting k tokens is a generous stand-in for k edited characters."""
    base = load_text_model("spam-tfidf-logreg")
    texts = caught_spam(base, n)
    first_k: list[int | None] = []
    for text in texts:
        toks, hit = text.split(), None
        for k in range(1, max(ks) + 1):
            if not toks:
                break
            cands = [" ".join(toks[:i] + toks[i + 1:]) or "." for i in range(len(toks))]
            p = base.query_proba(cands)[:, 1]
            j = int(p.argmin())
            toks = toks[:j] + toks[j + 1:]
            if float(p[j]) < 0.5:
                hit = k
                break
        first_k.append(hit)
    whole = base.predict([reverse_stretch(t) for t in texts]).tolist()
    out = {"n_caught_spam": len(texts),
           "passes_after_deleting_k_tokens": {str(k): round(sum(1 for h in first_k if h is not None and h <= k)
                                                            / len(texts), 4) for k in ks},
           "passes_after_reversing_whole_message": round(whole.count(0) / len(texts), 4)}
    print(f"  bound {json.dumps(out)}", flush=True)
    return out


def minilm_section(n: int) -> dict[str, Any]:
    target = load_text_model("spam-minilm")
    ds = load_sms_spam()
    texts = caught_spam(target, n)
    out: dict[str, Any] = {"n_caught_spam": len(texts),
                           "clean_accuracy": round(target.accuracy(ds.x_test, ds.y_test), 4)}
    print(f"spam-minilm clean accuracy {out['clean_accuracy']}", flush=True)
    out["textfooler@0.8"] = run(TextFooler(min_similarity=0.8), target, texts, examples=5)
    out["bad-characters<=6"] = run(bad_characters(max_chars=6), target, texts)
    out["normalize+bad-characters<=6"] = run(bad_characters(max_chars=6), DefendedTextTarget(target, normalize),
                                             texts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="caught spam messages to attack (tfidf section)")
    ap.add_argument("--n-minilm", type=int, default=40, help="caught spam messages to attack (minilm section)")
    ap.add_argument("--n-train", type=int, default=200, help="training spam attacked for augmentation (robust)")
    ap.add_argument("--rounds", type=int, default=1, help="attack-and-refit rounds of robust training (robust)")
    ap.add_argument("--sections", default="tfidf,robust,minilm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
                               "torch": torch.__version__}
    sections = args.sections.split(",")
    if "tfidf" in sections:
        results["tfidf"] = tfidf_section(args.n)
    if "robust" in sections:
        results["robust"] = robust_section(args.n, args.n_train, args.rounds)
    if "reorder" in sections:
        results["reorder"] = reorder_section(args.n)
    if "bound" in sections:
        results["bound"] = bound_section(args.n)
    if "minilm" in sections:
        results["minilm"] = minilm_section(args.n_minilm)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
