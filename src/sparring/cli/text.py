"""``sparring attack-text``: character, homoglyph/invisible, leet and word-level attacks on a text classifier,
optionally behind a normalising defence. Thin: the body is :func:`run_attack_text`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparring.cli.options import http_options, http_settings

__all__ = ["ATTACKS", "DEFENCES", "add_commands", "run_attack_text"]

ATTACKS = ("bad-characters", "deepwordbug", "leetspeak", "textfooler", "all-chars", "reorder")
DEFENCES = ("none", "normalize", "normalize+spelling")
_ALL_KINDS = ("swap", "substitute", "delete", "insert", "leet", "spacing", "homoglyph", "invisible")


def _messages(data: str | None, n: int, label: str | None, target: Any, *, text_col: str | None = None,
              label_col: str | None = None, header: bool | None = None) -> tuple[list[str], list[int]]:
    """The first ``n`` messages (of class ``label``, if given) and their class indices.

    Without ``data``: spam (or class ``label``) of the SMS test split. From a file
    (:func:`sparring.data.text_files.load_text_file`): labels are read from its label column and mapped by the
    model's class names; an unlabelled file takes ``label`` for every message (default class 1 of a binary model).
    """
    from sparring.data.text_files import encode_labels, load_text_file
    from sparring.errors import LabelError

    names = target.class_names
    want = None if label is None else int(encode_labels([label], names, target.n_classes, source="--label")[0])
    if data is None:
        from sparring.data.text import load_sms_spam

        ds = load_sms_spam()
        want = 1 if want is None else want
        pairs = [(t, y) for t, y in zip(ds.x_test, ds.y_test.tolist(), strict=True) if y == want]
        return [t for t, _ in pairs[:n]], [y for _, y in pairs[:n]]
    table = load_text_file(data, text_col=text_col, label_col=label_col, header=header)
    if table.labels is None:
        if want is None and target.n_classes != 2:
            raise LabelError(f"{data} has no label column and the model has {target.n_classes} classes; name the "
                             "label column (--label-col) or give the class of every message (--label NAME).")
        y = 1 if want is None else want
        return table.texts[:n], [y] * min(n, len(table.texts))
    ys = table.encode(names, target.n_classes).tolist()
    pairs = [(t, c) for t, c in zip(table.texts, ys, strict=True) if want is None or c == want]
    if not pairs:
        raise LabelError(f"{data} has no message of class {label!r} (--label); its labels are "
                         f"{sorted(set(table.labels))[:10]}.")
    return [t for t, _ in pairs[:n]], [c for _, c in pairs[:n]]


def run_attack_text(attack: str, model: str, *, data: str | None = None, n: int = 50, label: str | int | None = None,
                    max_chars: int | None = None, max_words: int | None = None, min_similarity: float = 0.8,
                    defence: str = "none", adaptive: bool = False, beam_width: int = 1,
                    query_budget: int | None = None, max_queries: int | None = None,
                    threshold: float | None = None, examples: int = 3, html: str | None = None,
                    text_col: str | None = None, label_col: str | None = None, header: bool | None = None,
                    classes: list[str] | None = None, trust_pickle: bool = False,
                    trusted_types: tuple[str, ...] = (), http: dict[str, Any] | None = None,
                    target_class: str | int | None = None) -> dict[str, Any]:
    """Attack ``n`` messages of ``model`` (a text zoo name, a skops/joblib pipeline, ``module:callable`` or an
    http(s) URL; see :func:`sparring.targets.text_load.load_text_target`) and summarise the result.

    ``http`` holds the HTTP settings (``headers``, ``timeout``, ``retries``, ``input_key``, ``output_key``,
    ``output``) for a URL. ``target_class`` (a class name or index) makes the attack targeted: messages of other
    classes are pushed to it (messages already of that class are left out).
    """
    from sparring.attacks.text import BidiReorder, CharAttack, Constraints, TextAttack, TextFooler, bad_characters
    from sparring.attacks.text.base import _preset
    from sparring.data.text import load_sms_spam
    from sparring.defenses.preprocess.text import DefendedTextTarget, SpellingCorrector, normalize
    from sparring.errors import ParameterError
    from sparring.targets.text import TextTarget
    from sparring.targets.text_load import load_text_target

    if attack not in ATTACKS or defence not in DEFENCES:
        raise ParameterError(f"attack must be one of {ATTACKS} and defence one of {DEFENCES}; got {attack!r}, "
                             f"{defence!r}.")
    target: TextTarget = load_text_target(model, classes=classes, trust_pickle=trust_pickle,
                                          trusted_types=trusted_types,
                                          query_budget=None if defence != "none" else query_budget, **(http or {}))
    texts, ys = _messages(data, n, None if label is None else str(label), target, text_col=text_col,
                          label_col=label_col, header=header)
    goal = None
    if target_class is not None:
        from sparring.data.text_files import encode_labels

        goal = int(encode_labels([str(target_class)], target.class_names, target.n_classes,
                                 source="--target-class")[0])
        kept = [(t, c) for t, c in zip(texts, ys, strict=True) if c != goal]
        if not kept:
            raise ParameterError(f"every selected message is already of --target-class {target_class!r}; choose "
                                 "messages of another class (--label) or another target class.")
        texts, ys = [t for t, _ in kept], [c for _, c in kept]
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
    res = atk(target, texts, ys, threshold=threshold, target_class=goal)
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
                  help="Text zoo model (spam-tfidf-logreg, spam-minilm), a skops/joblib scikit-learn pipeline, "
                       "'module:callable' (list[str] -> scores), or the URL of a moderation API "
                       "(POST {inputs: [...]} -> {scores: [[...]]}).")
    @click.option("--classes", help="Class names in the model's output order, comma-separated (e.g. ok,toxic,threat)"
                  "; needed for a URL or callable with more than 2 classes and to read label names.")
    @click.option("--trust-pickle", is_flag=True, help="Allow unpickling a joblib/pickle file or any skops type "
                  "(runs code from the file: only for files you trust).")
    @click.option("--trusted-type", "trusted_types", multiple=True, help="A skops type you trust (repeatable).")
    @click.option("--data", "-d", type=click.Path(dir_okay=False), help="Messages: .csv, .tsv, .jsonl, .parquet "
                  "with a text and a label column, or a text file (one message per line, or 'label<TAB>message')."
                  " Default: spam of the SMS test split.")
    @click.option("--text-col", help="Name (or 0-based position, without a header) of the text column.")
    @click.option("--label-col", help="Name (or 0-based position, without a header) of the label column.")
    @click.option("--header/--no-header", default=None, help="Whether the CSV/TSV starts with a header line "
                  "(default: decided from the file).")
    @click.option("--n", "n", type=click.IntRange(min=1), default=50, show_default=True)
    @click.option("--label", help="A class (name or index): only messages of it are attacked; for unlabelled "
                  "messages, their true class (default 1, spam, for a binary model).")
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
    @click.option("--target-class", help="Targeted: push messages to this class (name or index), e.g. ok.")
    @click.option("--examples", type=click.IntRange(min=0), default=3, show_default=True)
    @click.option("--html", type=click.Path(dir_okay=False), help="Write the examples side by side to this HTML file.")
    @http_options("a URL model", batch="inputs: the messages", answer="scores")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    def attack_text(attack: str, model: str, classes: str | None, trust_pickle: bool, trusted_types: tuple[str, ...],
                    data: str | None, text_col: str | None, label_col: str | None, header: bool | None, n: int,
                    label: str | None, max_chars: int | None, max_words: int | None, min_similarity: float,
                    defence: str, adaptive: bool, beam_width: int, query_budget: int | None,
                    max_queries: int | None, threshold: float | None, target_class: str | None, examples: int,
                    html: str | None,
                    http_header: tuple[str, ...], timeout: float | None, input_key: str | None,
                    output_key: str | None, scores: str | None, as_json: bool,
                    retries: int | None = None) -> None:
        """Evade a text classifier (spam filter) with character, Unicode or word edits.

        \b
        Examples:
          sparring attack-text bad-characters --max-chars 3 --n 100
          sparring attack-text bad-characters --defence normalize
          sparring attack-text reorder --max-chars 3 --n 50
          sparring attack-text all-chars --defence normalize --adaptive
          sparring attack-text textfooler --model spam-minilm --n 20
          sparring attack-text deepwordbug --model tox.skops --data tox.csv --text-col message --label-col label
          sparring attack-text bad-characters --model https://mod.example/score --classes ok,toxic,threat \\
              --http-header 'Authorization: Bearer ${MOD_TOKEN}' --data tox.jsonl
        """
        try:
            s = run_attack_text(attack, model, data=data, n=n, label=label, max_chars=max_chars,
                                max_words=max_words, min_similarity=min_similarity, defence=defence,
                                adaptive=adaptive, beam_width=beam_width, query_budget=query_budget,
                                max_queries=max_queries, threshold=threshold, examples=examples, html=html,
                                target_class=target_class,
                                text_col=text_col, label_col=label_col, header=header,
                                classes=classes.split(",") if classes else None, trust_pickle=trust_pickle,
                                trusted_types=trusted_types,
                                http=http_settings(http_header, timeout, input_key, output_key, scores, retries))
        except errors.SparringError as exc:
            _fail(exc)
        budget_msg = (f"the query budget ({query_budget}) ran out: {s['n_unknown']} of {s['n']} messages are "
                      "unknown (neither robust nor broken; not counted as robust). Raise --query-budget or lower "
                      "--n.") if s["budget_exhausted"] else ""
        if as_json:
            if budget_msg:  # the summary is still the answer; the error keys say it failed, as every --json error
                s.update(error=budget_msg, type="QueryBudgetExceeded", exit_code=EXIT_BUDGET)
            click.echo(json.dumps(s, default=str, ensure_ascii=False))
        else:
            for key in ("attack", "model", "defence", "adaptive", "n", "clean_accuracy", "attack_success_rate",
                        "robust_accuracy", "n_unknown", "mean_edited_chars", "mean_edited_words", "mean_similarity",
                        "mean_queries", "budget_exhausted"):
                v = s.get(key)
                click.echo(f"{key:22s} {round(v, 4) if isinstance(v, float) else v}")
            if len(s["per_class"]) > 1 or (s["class_names"] or [])[2:]:
                click.echo("\nper class (messages, clean accuracy, attack success, robust accuracy, unknown):")
                for name, c in s["per_class"].items():
                    moved = ", ".join(f"{k}: {v}" for k, v in c["moved_to"].items())
                    click.echo(f"  {name:20s} {c['n']:5d} {c['clean_accuracy']:.3f} {c['attack_success_rate']:.3f} "
                               f"{c['robust_accuracy']:.3f} {c['n_unknown']:4d}" + (f"  -> {moved}" if moved else ""))
            for ex in s["examples"]:
                click.echo(f"\n  {ex['label']} -> {ex['adversarial_label']}\n  original:    {ex['original']}\n"
                           f"  adversarial: {ex['adversarial']}")
        if budget_msg:
            click.echo(f"error (QueryBudgetExceeded): {budget_msg}", err=True)
            sys.exit(EXIT_BUDGET)
