"""The curated public API: everything in __all__ exists, nothing private leaks, importing stays light."""

from __future__ import annotations

import subprocess
import sys

import sparring


def test_all_names_exist_and_are_sorted_uniquely() -> None:
    assert len(set(sparring.__all__)) == len(sparring.__all__)
    for name in sparring.__all__:
        assert hasattr(sparring, name), name
    assert not [n for n in sparring.__all__ if n.startswith("_") and n != "__version__"]


def test_public_api_names_the_foundation() -> None:
    expected = {"InputSpec", "Access", "TorchTarget", "SklearnTarget", "OnnxTarget", "HttpTarget", "load_target",
                "FGSM", "PGD", "EvasionResult", "zoo", "errors", "CarliniWagnerL2", "DeepFool", "FAB",
                "APGD", "APGDT", "AutoAttack"}
    assert expected <= set(sparring.__all__)


def test_import_does_not_pull_optional_heavy_modules() -> None:
    heavy = ("onnxruntime", "skops", "PIL", "matplotlib", "jinja2", "pydantic", "yaml", "opacus", "transformers",
             "sentence_transformers", "highspy", "confusable_homoglyphs")
    families = ("sparring.attacks.poisoning, sparring.attacks.extraction, sparring.attacks.privacy, "
                "sparring.attacks.text, sparring.attacks.tabular, sparring.defenses.detect, "
                "sparring.defenses.preprocess, sparring.defenses.training, sparring.defenses.layered")
    code = f"import sys, sparring, {families}; bad = [m for m in {heavy!r} if m in sys.modules]; print(','.join(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_errors_subclass_builtins() -> None:
    from sparring import errors

    assert issubclass(errors.InputSpecError, ValueError)
    assert issubclass(errors.LabelError, errors.InputSpecError)
    assert issubclass(errors.AccessError, PermissionError)
    assert issubclass(errors.QueryBudgetExceeded, RuntimeError)
    assert issubclass(errors.ModelLoadError, OSError)
    assert issubclass(errors.EndpointError, ConnectionError)
