"""The built-in audit checks. Importing this package registers them, in this order, with the check registry."""

from sparring.audit.checks import baseline, certification, evasion, sanity  # noqa: F401  (registration)
