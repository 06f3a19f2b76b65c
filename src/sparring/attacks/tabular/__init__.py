"""Constrained feature-space evasion for tabular models (fraud, malware-style features).

Every attack takes a :class:`~sparring.targets.constraints.FeatureConstraints` and returns a
:class:`ConstrainedResult` whose rows were checked against it after the attack.

* :class:`CPGD` — white-box constrained PGD / CAPGD (Simonetto et al. 2022, 2024) for differentiable models;
* :class:`CostSearch` — black-box minimum-cost search (scores: beam; labels: sampling), any model;
* :class:`TreeEvasion` — exact minimal-cost evasion of scikit-learn tree ensembles as a MILP (Kantchelian et al. 2016).
"""

from sparring.attacks.tabular.cpgd import CAPGD, CPGD
from sparring.attacks.tabular.result import ConstrainedResult, run_tabular
from sparring.attacks.tabular.search import CostSearch, refine
from sparring.attacks.tabular.trees import TreeEvasion

__all__ = ["CAPGD", "CPGD", "ConstrainedResult", "CostSearch", "TreeEvasion", "refine", "run_tabular"]
