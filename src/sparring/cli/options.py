"""The HTTP options every command with ``--url`` (or a URL model) takes, declared once.

``--http-header 'Name: value'`` (repeatable; ``$VAR`` / ``${VAR}`` read from the environment and never printed),
``--timeout``, ``--input-key``, ``--output-key`` and ``--scores probabilities|logits``. :func:`http_settings` turns
them into target keywords (only those given).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["http_options", "http_settings", "require_url"]

_F = TypeVar("_F", bound=Callable[..., Any])


def http_options(what: str = "the --url API", batch: str = "inputs", answer: str = "scores, or labels") -> Callable[
        [_F], _F]:
    """Add the five HTTP options to a click command; ``what`` names the endpoint in the help texts."""

    def deco(fn: _F) -> _F:
        for opt in reversed([
            click.option("--http-header", multiple=True, help=f"HTTP header 'Name: value' for {what} (repeatable); "
                         "$VAR and ${VAR} are read from the environment (keep secrets there; never written to the "
                         "output)."),
            click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                         help=f"Seconds per HTTP request to {what} (10)."),
            click.option("--input-key", help=f"Request key holding the batch (default {batch})."),
            click.option("--output-key", help=f"Answer key holding the predictions (default {answer})."),
            click.option("--scores", type=click.Choice(["probabilities", "logits"]),
                         help="What the API's scores are (default probabilities)."),
        ]):
            fn = opt(fn)
        return fn

    return deco


def http_settings(http_header: tuple[str, ...], timeout: float | None, input_key: str | None,
                  output_key: str | None, scores: str | None) -> dict[str, Any]:
    """The options of :func:`http_options` as target keywords (``headers``, ``timeout``, ``input_key``,
    ``output_key``, ``output``), only those given."""
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
    for key, v in (("timeout", timeout), ("input_key", input_key), ("output_key", output_key), ("output", scores)):
        if v is not None:
            out[key] = v
    return out


def require_url(http: dict[str, Any], url: str | None) -> None:
    """Refuse HTTP options given without ``--url`` (they would be silently ignored)."""
    from sparring.errors import ParameterError

    if http and not url:
        flags = {"headers": "--http-header", "output": "--scores"}
        given = ", ".join(flags.get(k, "--" + k.replace("_", "-")) for k in http)
        raise ParameterError(f"{given} applies to --url only; give --url or drop it.")
