"""The built-in audit checks. Importing this package registers them, in this order, with the check registry
(the order is the order of the steps in a plan: baseline first, then evasion, sanity checks, retry, certification;
drift on monitoring data, then the LLM application's red team).
"""
# isort: skip_file

from sparring.audit.checks import baseline  # noqa: F401
from sparring.audit.checks import evasion  # noqa: F401
from sparring.audit.checks import sanity  # noqa: F401
from sparring.audit.checks import retry  # noqa: F401
from sparring.audit.checks import certification  # noqa: F401
from sparring.audit.checks import privacy  # noqa: F401
from sparring.audit.checks import poisoning  # noqa: F401
from sparring.audit.checks import extraction  # noqa: F401
from sparring.audit.checks import tabular  # noqa: F401
from sparring.audit.checks import layered  # noqa: F401
from sparring.audit.checks import text  # noqa: F401
from sparring.audit.checks import drift  # noqa: F401
from sparring.audit.checks import llm  # noqa: F401
