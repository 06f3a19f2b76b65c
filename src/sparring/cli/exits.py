"""The exit codes of the ``sparring`` command and the library error each one stands for.

Kept apart from :mod:`sparring.cli` so that the command modules (``cli/audit.py`` and the others) read them without
importing the package that imports them (no import cycle); :mod:`sparring.cli` re-exports every name.
"""

from __future__ import annotations

from sparring import errors

__all__ = ["EXIT_BUDGET", "EXIT_GATE", "EXIT_HELP", "EXIT_INPUT", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_MODEL",
           "EXIT_OK", "EXIT_USAGE", "exit_code_for"]

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INPUT, EXIT_MODEL, EXIT_BUDGET = 0, 1, 2, 3, 4, 5
EXIT_GATE, EXIT_INTERRUPTED = 6, 130

EXIT_HELP = (
    "Exit codes: 0 success, 1 internal error, 2 usage error, 3 bad input (data/spec/parameters), "
    "4 model, endpoint or store problem, 5 query budget exhausted, 6 an audit gate failed, 130 interrupted."
)
"""The epilog of every command's ``--help``."""


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for a library error."""
    if isinstance(exc, errors.QueryBudgetExceeded):
        return EXIT_BUDGET
    if isinstance(exc, errors.ModelLoadError | errors.EndpointError | errors.AccessError | errors.StoreError):
        return EXIT_MODEL
    if isinstance(exc, errors.InputSpecError | errors.ParameterError | errors.DataLoadError | errors.ThreatModelError
                  | errors.CheckpointError | errors.BaselineError):
        return EXIT_INPUT
    return EXIT_INTERNAL
