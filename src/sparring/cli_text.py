"""``sparring attack-text``: character, homoglyph/invisible, leet and word-level attacks on a text classifier,
optionally behind a normalising defence. Thin: the body is :func:`run_attack_text`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ATTACKS", "DEFENCES", "add_commands", "run_attack_text"]

ATTACKS = ("bad-characters", "deepwordbug", "leetspeak", "textfooler", "all-chars", "reorder")
DEFENCES = ("none", "normalize", "normalize+spelling")
_ALL_KINDS = ("swap", "substitute", "delete", "insert", "leet", "spacing", "homoglyph", "invisible")


def _messages(data: str | None, n: int, label: int | None) -> tuple[list[str], list[int]]:
    """The first ``n`` messages of class ``label`` (default spam) from the SMS test split or a file."""
    from sparring.errors import DataLoadError

    if data is None:
        from sparring.data.text import load_sms_spam

        ds = load_sms_spam()
        want = 1 if label is None else label
        pairs = [(t, y) for t, y in zip(ds.x_test, ds.y_test.tolist(), strict=True) if y == want]
        return [t for t, _ in pairs[:n]], [y for _, y in pairs[:n]]
    try:
        lines = [ln for ln in Path(data).read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataLoadError(f"cannot read messages from {data!r} ({exc}); expected a UTF-8 text file with one "
                            "message per line, or 'label<TAB>message' lines (label ham/spam or 0/1).") from None
    texts, ys = [], []
    for ln in lines[:n]:
        head, sep, rest = ln.partition("\t")
        if sep and head in ("ham", "spam", "0", "1"):
            texts.append(rest)
            ys.append(1 if head in ("spam", "1") else 0)
        else:
            texts.append(ln)
            ys.append(1 if label is None else label)
    return texts, ys


def run_attack_text(attack: str, model: str, *, data: str | None = None, n: int = 50, label: int | None = None,
                    max_chars: int | None = None, max_words: int | None = None, min_similarity: float = 0.8,
                    defence: str = "none", adaptive: bool = False, beam_width: int = 1,
                    query_budget: int | None = None, max_queries: int | None = None,
                    threshold: float | None = None, examples: int = 3, html: str | None = None) -> dict[str, Any]:
    """Attack ``n`` messages of ``model`` (a text zoo name or an http(s) URL) and summarise the result."""
    from sparring.attacks.text import BidiReorder, CharAttack, Constraints, TextAttack, TextFooler, bad_characters
    from sparring.attacks.text.base import _preset
    from sparring.data.text import load_sms_spam, load_text_model
    from sparring.defenses.preprocess.text import DefendedTextTarget, SpellingCorrector, normalize
    from sparring.errors import ParameterError
    from sparring.targets.text import HttpTextTarget, TextTarget

    if attack not in ATTACKS or defence not in DEFENCES:
        raise ParameterError(f"attack must be one of {ATTACKS} and defence one of {DEFENCES}; got {attack!r}, "
                             f"{defence!r}.")
    target: TextTarget
    if model.startswith(("http://", "https://")):
        target = HttpTextTarget(model, query_budget=None if defence != "none" else query_budget)
    else:
        target = load_text_model(model, query_budget=None if defence != "none" else query_budget)
    transform: Callable[[str], str] | None = None
    if defence != "none":
        spell = SpellingCorrector.from_texts(load_sms_spam().x_train) if defence == "normalize+spelling" else None

        def defended(text: str) -> str:
            out = normalize(text)
            return spell(out) if spell is not None else out

        defended.__name__ = defence.replace("+", "_")
        transform = defended
        target = DefendedTextTarget(target, transform, query_budget=query_budget)
    cons = Constraints(max_chars=max_chars, max_words=max_words)
    common: dict[str, Any] = {"beam_width": beam_width, "max_queries": max_queries,
                              "adaptive_to": transform if adaptive else None}
    atk: TextAttack
    if attack == "textfooler":
        atk = TextFooler(min_similarity=min_similarity, constraints=cons, **common)
    elif attack == "all-chars":
        atk = CharAttack(_ALL_KINDS, constraints=cons, **common)
    elif attack == "reorder":  # bidi reordering, then homoglyphs/invisibles with the characters left
        atk = BidiReorder(constraints=cons, max_queries=max_queries, adaptive_to=common["adaptive_to"],
                          then=bad_characters(max_chars=None, beam_width=beam_width))
    else:
        kinds = {"bad-characters": ("homoglyph", "invisible"), "deepwordbug": ("swap", "substitute", "delete",
                 "insert"), "leetspeak": ("leet", "spacing")}[attack]
        atk = _preset(kinds, attack, max_chars, max_words, {"constraints": cons, **common})
    texts, ys = _messages(data, n, label)
    res = atk(target, texts, ys, threshold=threshold)
    summary = res.summary()
    summary.update(model=model, defence=defence, adaptive=adaptive, examples=res.examples(examples))
    if html:
        Path(html).parent.mkdir(parents=True, exist_ok=True)
        Path(html).write_text(res.to_html(max(examples, 10)), encoding="utf-8")
        summary["html"] = html
    return summary


def add_commands(cli: Any) -> None:
    import click

    from sparring import errors
    from sparring.cli import _EXIT_HELP, EXIT_BUDGET, _fail

    group: click.Group = cli

    @group.command("attack-text", epilog=_EXIT_HELP)
    @click.argument("attack", type=click.Choice(ATTACKS))
    @click.option("--model", "-m", default="spam-tfidf-logreg", show_default=True,
                  help="Text zoo model (spam-tfidf-logreg, spam-minilm) or the URL of a moderation API "
                       "(POST {inputs: [...]} -> {scores: [[...]]}).")
    @click.option("--data", "-d", type=click.Path(dir_okay=False), help="Messages: one per line, or "
                  "'label<TAB>message'. Default: spam of the SMS test split.")
    @click.option("--n", "n", type=click.IntRange(min=1), default=50, show_default=True)
    @click.option("--label", type=click.IntRange(min=0), help="True label of unlabelled messages (default 1, spam).")
    @click.option("--max-chars", type=click.IntRange(min=1), help="Most edited characters per message.")
    @click.option("--max-words", type=click.IntRange(min=1), help="Most edited words per message.")
    @click.option("--min-similarity", type=float, default=0.8, show_default=True, help="textfooler: MiniLM floor.")
    @click.option("--defence", "--defense", "defence", type=click.Choice(DEFENCES), default="none",
                  show_default=True, help="Put the model behind a normalising defence.")
    @click.option("--adaptive", is_flag=True, help="Only try edits that survive the defence.")
    @click.option("--beam-width", type=click.IntRange(min=1), default=1, show_default=True)
    @click.option("--query-budget", type=click.IntRange(min=0), help="Total queries; past it a partial result whose "
                  "unfinished messages are unknown (never robust), and exit code 5.")
    @click.option("--max-queries", type=click.IntRange(min=1), help="Queries per message.")
    @click.option("--threshold", type=float, help="Success when the true class's probability falls below this.")
    @click.option("--examples", type=click.IntRange(min=0), default=3, show_default=True)
    @click.option("--html", type=click.Path(dir_okay=False), help="Write the examples side by side to this HTML file.")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    def attack_text(attack: str, model: str, data: str | None, n: int, label: int | None, max_chars: int | None,
                    max_words: int | None, min_similarity: float, defence: str, adaptive: bool, beam_width: int,
                    query_budget: int | None, max_queries: int | None, threshold: float | None, examples: int,
                    html: str | None, as_json: bool) -> None:
        """Evade a text classifier (spam filter) with character, Unicode or word edits.

        \b
        Examples:
          sparring attack-text bad-characters --max-chars 3 --n 100
          sparring attack-text bad-characters --defence normalize
          sparring attack-text reorder --max-chars 3 --n 50
          sparring attack-text all-chars --defence normalize --adaptive
          sparring attack-text textfooler --model spam-minilm --n 20
        """
        try:
            s = run_attack_text(attack, model, data=data, n=n, label=label, max_chars=max_chars,
                                max_words=max_words, min_similarity=min_similarity, defence=defence,
                                adaptive=adaptive, beam_width=beam_width, query_budget=query_budget,
                                max_queries=max_queries, threshold=threshold, examples=examples, html=html)
        except errors.SparringError as exc:
            _fail(exc)
        if as_json:
            click.echo(json.dumps(s, default=str, ensure_ascii=False))
        else:
            for key in ("attack", "model", "defence", "adaptive", "n", "clean_accuracy", "attack_success_rate",
                        "robust_accuracy", "n_unknown", "mean_edited_chars", "mean_edited_words", "mean_similarity",
                        "mean_queries", "budget_exhausted"):
                v = s.get(key)
                click.echo(f"{key:22s} {round(v, 4) if isinstance(v, float) else v}")
            for ex in s["examples"]:
                click.echo(f"\n  original:    {ex['original']}\n  adversarial: {ex['adversarial']}")
        if s["budget_exhausted"]:
            click.echo(f"error (QueryBudgetExceeded): the query budget ({query_budget}) ran out: {s['n_unknown']} "
                       f"of {s['n']} messages are unknown (neither robust nor broken; not counted as robust). "
                       "Raise --query-budget or lower --n.", err=True)
            sys.exit(EXIT_BUDGET)
