"""The options many commands share, declared once: the HTTP settings and errors as JSON under ``--json``.

HTTP options, for every command with ``--url`` (or a URL model):

``--http-header 'Name: value'`` (repeatable; ``$VAR`` / ``${VAR}`` read from the environment and never printed),
``--timeout``, ``--retries``, ``--input-key``, ``--output-key`` and ``--scores probabilities|logits``.
:func:`http_settings` turns them into target keywords (only those given).

Errors under ``--json``: :func:`json_requested` tells whether the running command (or a group above it) was given
``--json``; then :func:`error_json` is what ``sparring.cli._fail`` and :class:`JsonErrorGroup` print on stdout,
``{"error": message, "type": exception class, "exit_code": code}``, with the same exit code as without ``--json``;
the usual ``error (Type): message`` line still goes to stderr, so a run piped into a file shows its error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["JsonErrorGroup", "error_json", "http_options", "http_settings", "json_requested", "require_url"]

_F = TypeVar("_F", bound=Callable[..., Any])


def http_options(what: str = "the --url API", batch: str = "inputs", answer: str = "scores, or labels") -> Callable[
        [_F], _F]:
    """Add the six HTTP options to a click command; ``what`` names the endpoint in the help texts."""

    def deco(fn: _F) -> _F:
        for opt in reversed([
            click.option("--http-header", multiple=True, help=f"HTTP header 'Name: value' for {what} (repeatable); "
                         "$VAR and ${VAR} are read from the environment (keep secrets there; never written to the "
                         "output)."),
            click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                         help=f"Seconds per HTTP request to {what} (10)."),
            click.option("--retries", type=click.IntRange(min=0),
                         help=f"Extra attempts after a failed request to {what} (default 3; 0 for none): connection "
                         "errors, timeouts, HTTP 429 and 5xx are retried, each wait twice the last (exponential "
                         "backoff); other 4xx are not."),
            click.option("--input-key", help=f"Request key holding the batch (default {batch})."),
            click.option("--output-key", help=f"Answer key holding the predictions (default {answer})."),
            click.option("--scores", type=click.Choice(["probabilities", "logits"]),
                         help="What the API's scores are (default probabilities)."),
        ]):
            fn = opt(fn)
        return fn

    return deco


def npz_key_options(fn: _F) -> _F:
    """``--x-key``/``--y-key``: the array names of ``.npz`` data files (default ``x`` and ``y``), kept in the click
    context for :func:`sparring.cli._load_data`, so every command that reads data files takes them alike."""

    def keep(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            ctx.meta[f"sparring.npz.{param.name}"] = value
        return value

    for name, default in (("--y-key", "y"), ("--x-key", "x")):
        fn = click.option(name, callback=keep, expose_value=False, is_eager=True,
                          help=f"Array name of the {'labels' if default == 'y' else 'inputs'} in .npz data files "
                               f"(default {default}).")(fn)
    return fn


def npz_keys() -> dict[str, str]:
    """The ``x_key``/``y_key`` given with :func:`npz_key_options` to the running command (none outside one)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return {}
    return {k: ctx.meta[f"sparring.npz.{k}"] for k in ("x_key", "y_key") if f"sparring.npz.{k}" in ctx.meta}


def http_settings(http_header: tuple[str, ...], timeout: float | None, input_key: str | None,
                  output_key: str | None, scores: str | None, retries: int | None = None) -> dict[str, Any]:
    """The options of :func:`http_options` as target keywords (``headers``, ``timeout``, ``retries``,
    ``input_key``, ``output_key``, ``output``), only those given."""
    from sparring.errors import ParameterError

    out: dict[str, Any] = {}
    headers = {}
    for h in http_header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise ParameterError(f"--http-header takes 'Name: value' (e.g. 'Authorization: Bearer ${{TOKEN}}'); got "
                                 f"{h!r}.")
        headers[name.strip()] = value.strip()
    if headers:
        out["headers"] = headers
    for key, v in (("timeout", timeout), ("retries", retries), ("input_key", input_key), ("output_key", output_key),
                   ("output", scores)):
        if v is not None:
            out[key] = v
    return out


def require_url(http: dict[str, Any], url: str | None, flag: str = "--url") -> None:
    """Refuse HTTP options given without ``--url`` (they would be silently ignored); ``flag`` names what carries the
    URL in the command (``init``: a URL ``--model``)."""
    from sparring.errors import ParameterError

    if http and not url:
        flags = {"headers": "--http-header", "output": "--scores"}
        given = ", ".join(flags.get(k, "--" + k.replace("_", "-")) for k in http)
        raise ParameterError(f"{given} applies to {flag} only; give {flag} or drop it.")


def json_requested(ctx: click.Context | None = None) -> bool:
    """Whether the command running in ``ctx`` (default: the current click context) or a group above it has
    ``--json`` (its ``as_json`` parameter) set."""
    c = ctx if ctx is not None else click.get_current_context(silent=True)
    while c is not None:
        if c.params.get("as_json"):
            return True
        c = c.parent
    return False


def error_json(message: str, kind: str, exit_code: int) -> str:
    """The one-line JSON object a ``--json`` command prints instead of an error message."""
    return json.dumps({"error": message, "type": kind, "exit_code": exit_code}, ensure_ascii=False)


class JsonErrorGroup(click.Group):
    """A click group whose commands answer ``--json`` with a JSON error for what the commands do not catch
    themselves: usage errors (bad option values, missing arguments: exit 2) and unexpected exceptions (exit 1).

    ``--json`` is looked for among the command's own arguments before click parses them, so a usage error found
    while parsing is JSON too. Library errors go through ``sparring.cli._fail``, which reads :func:`json_requested`.
    """

    def invoke(self, ctx: click.Context) -> Any:
        args = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        as_json = "--json" in args[1:] if args else False
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            if not as_json:
                raise
            click.echo(error_json(exc.format_message(), type(exc).__name__, exc.exit_code))
            click.echo(f"error ({type(exc).__name__}): {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if not as_json:
                raise
            from sparring.cli.exits import EXIT_INTERNAL, exit_code_for

            code = exit_code_for(exc)
            msg = str(exc) if code != EXIT_INTERNAL else (f"{exc} (this looks like a bug in sparring; please report "
                                                            "it with the command you ran)")
            click.echo(error_json(msg, type(exc).__name__, code))
            click.echo(f"error ({type(exc).__name__}): {msg}", err=True)
            sys.exit(code)
