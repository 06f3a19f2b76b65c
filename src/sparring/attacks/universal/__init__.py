"""Universal attacks: one perturbation trained on a set of images, then applied to unseen ones.

* :class:`UniversalPatch` — the adversarial patch (Brown, Mané, Roy, Abadi, Gilmer 2017), trained with expectation
  over transformation (Athalye, Engstrom, Ilyas, Kwok 2018) so it works wherever it is pasted.
* :class:`UniversalPerturbation` — the universal adversarial perturbation (Moosavi-Dezfooli, Fawzi, Fawzi,
  Frossard 2017), an image-agnostic ``v`` with ``||v|| <= eps``.

Neither is a per-example :class:`~sparring.attacks.EvasionAttack`: each is configuration at construction, and
``fit(target, x_train)`` returns a result holding the trained perturbation, which ``apply`` pastes or adds onto new
inputs and ``evaluate`` measures on held-out data::

    patch = UniversalPatch(target_class=3, size=0.2).fit(target, x_train)
    patch.evaluate(target, x_test, y_test)["targeted_success_rate"]

Each lives in its own module (:mod:`.patch`, :mod:`.perturbation`) and is re-exported here.
"""

from sparring.attacks.universal.patch import PatchResult, UniversalPatch
from sparring.attacks.universal.perturbation import PerturbationResult, UniversalPerturbation

__all__ = ["PatchResult", "PerturbationResult", "UniversalPatch", "UniversalPerturbation"]
