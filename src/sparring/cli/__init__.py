"""The ``sparring`` command. Thin: it parses, calls the library, prints.

Exit codes (also in ``sparring --help``):
    0 success · 1 internal error (a bug: please report) · 2 usage error (bad option or argument) ·
    3 bad input (data, spec or parameter values) · 4 model or endpoint problem (cannot load, unreachable, access) ·
    5 query budget exhausted · 6 an audit gate failed · 130 interrupted (Ctrl-C; partial report written)
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

try:
    import click
except ImportError:  # pragma: no cover - exercised only without the extra
    click = None  # type: ignore[assignment]

from sparring import errors
from sparring.cli import exits

# The exit codes live in cli/exits.py (so command modules read them without importing this package); here they are
# sparring.cli.EXIT_*, as the command modules, tests and users know them.
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INPUT = exits.EXIT_OK, exits.EXIT_INTERNAL, exits.EXIT_USAGE, exits.EXIT_INPUT
EXIT_MODEL, EXIT_BUDGET, EXIT_GATE = exits.EXIT_MODEL, exits.EXIT_BUDGET, exits.EXIT_GATE
EXIT_INTERRUPTED = exits.EXIT_INTERRUPTED
_EXIT_HELP = exits.EXIT_HELP
exit_code_for = exits.exit_code_for

# Modules that add commands of their own: each defines ``add_commands(cli: click.Group) -> None`` and uses
# ``sparring.cli._fail`` to turn a SparringError into its exit code.
_COMMAND_MODULES: tuple[str, ...] = ("universal", "privacy", "poison", "extraction", "train", "text", "tabular",
                                      "drift", "llm", "guard", "history")


def _fail(exc: BaseException) -> NoReturn:
    from sparring.cli.options import error_json, json_requested

    code = exit_code_for(exc)
    kind = type(exc).__name__
    if json_requested():  # --json: the error is machine output too, on stdout (and still said on stderr)
        click.echo(error_json(str(exc), kind, code))
    click.echo(f"error ({kind}): {exc}", err=True)
    if code == EXIT_INTERNAL:
        click.echo("This looks like a bug in sparring; please report it with the command you ran.", err=True)
    sys.exit(code)


def _attacks() -> dict[str, type]:
    from sparring.attacks.base import attack_names, get_attack

    return {name: get_attack(name) for name in attack_names()}


def _load_target(model: str, spec_path: str | None, entry_point: str | None, trust_pickle: bool, device: str, *,
                 url: str | None = None, output: str = "scores", http: dict[str, Any] | None = None,
                 white_box: bool = False, **target_kwargs: Any) -> Any:
    """The target of a command: ``--model`` (zoo name or file; an ONNX file converted to torch when ``white_box``)
    or, with ``--url``, the prediction API there (its spec from ``--spec`` or the zoo ``--model`` it serves; ``http``
    the settings of :func:`sparring.cli.options.http_settings`: headers with ``$VAR`` read from the environment,
    timeout, input/output keys, score kind)."""
    from sparring.targets.load import load_spec, load_target

    spec = load_spec(spec_path) if spec_path else None
    if url is None:
        return load_target(model, spec=spec, trust_pickle=trust_pickle, device=device, entry_point=entry_point,
                           white_box=white_box, **target_kwargs)
    from sparring.data import zoo
    from sparring.targets.http import HttpTarget

    if spec is None:
        if model not in zoo.names():
            raise errors.ParameterError(
                f"--url needs the API's input spec: give --spec spec.json (InputSpec keys: shape, n_classes, bounds, "
                f"layout), or the zoo --model the API serves; got --model {model!r}.")
        spec = zoo.entry(model).spec()
    kw = dict(http or {})
    if "headers" in kw:
        from sparring.targets.text_load import expand_env

        kw["headers"] = {k: expand_env(v, f"--http-header {k}") for k, v in kw["headers"].items()}
    if "output" in kw:
        kw["score_kind"] = kw.pop("output")
    return HttpTarget(url, spec, output=output, **kw, **target_kwargs)  # type: ignore[arg-type]


def _onnx_adversarial_check(target: Any, result: Any) -> dict[str, Any]:
    """An ONNX model attacked through its torch conversion: onnxruntime must agree on the adversarial examples."""
    try:
        target.check_adversarial(result.x_adv, result.adv_pred)
    except errors.SparringError as exc:
        _fail(exc)
    return target.describe()["onnx"]  # type: ignore[no-any-return]


def _load_data(model: str, data: str | None, n: int, split: str) -> tuple[Any, Any]:
    from sparring.data import zoo

    if data is None:
        if model not in zoo.names():
            raise errors.ParameterError(
                f"--data is needed for a model that is not in the zoo ({model!r}): give an .npz (x, y), a CSV with a "
                "label column, or an image folder."
            )
        ds = zoo.data(model)
        x, y = (ds.x_test, ds.y_test) if split == "test" else (ds.x_train, ds.y_train)
    else:
        from sparring.cli.options import npz_keys
        from sparring.data.files import load_data

        keys = npz_keys() if str(data).lower().endswith(".npz") else {}
        loaded = load_data(data, **keys)
        x, y = loaded[0], loaded[1]
    return x[:n], y[:n]


def _option_names(attack_cls: type) -> set[str]:
    return {p for p in inspect.signature(attack_cls).parameters if p != "self"}


def build_cli() -> Any:
    """Build the click command group (separate from :func:`main` so tests can invoke it in-process)."""
    from sparring.cli.options import JsonErrorGroup, http_options, npz_key_options, require_url

    @click.group(cls=JsonErrorGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EXIT_HELP)
    @click.version_option(package_name="sparring")
    def cli() -> None:
        """sparring — attack your own models before attackers do, defend them, prove how robust they are."""

    @cli.command(epilog=_EXIT_HELP)
    @click.argument("attack", type=click.Choice(sorted(_attacks())))
    @click.option("--model", "-m", default="digits-cnn", show_default=True,
                  help="Zoo name, or a model file (TorchScript, torch.export .pt2, state dict with --entry-point, "
                       "ONNX, skops; joblib/pickle only with --trust-pickle). An ONNX model is converted to torch "
                       "for gradient attacks and checked against onnxruntime.")
    @click.option("--url", help="Attack a prediction API at this URL instead (score/label attacks: square, "
                  "hopskipjump; needs --spec, or the zoo --model the API serves).")
    @click.option("--output", type=click.Choice(["scores", "labels"]), default="scores", show_default=True,
                  help="What the --url API returns.")
    @http_options()
    @click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="InputSpec JSON for a model file.")
    @click.option("--entry-point", help="'package.module:callable' building the nn.Module for a state-dict file.")
    @click.option("--trust-pickle", is_flag=True, help="Allow pickle-based model files (they can run code).")
    @npz_key_options
    @click.option("--data", "-d", type=click.Path(), help="Data file: .npz (x, y), CSV with a 'label' column, or an "
                  "image folder. Default: the zoo model's test split.")
    @click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
    @click.option("--n", "n", type=click.IntRange(min=1), default=256, show_default=True, help="Examples to attack.")
    @click.option("--eps", type=float, help="Budget in raw input space (default 0.1; cw, deepfool and hopskipjump "
                  "default to none: the minimal perturbation they find).")
    @click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
    @click.option("--steps", type=click.IntRange(min=1), help="Iterations (PGD; default 20).")
    @click.option("--alpha", type=float, help="Step size (PGD; default 2.5·eps/steps).")
    @click.option("--restarts", type=click.IntRange(min=1), help="Random restarts (PGD; default 1).")
    @click.option("--loss", type=click.Choice(["ce", "margin", "dlr"]), help="Attack loss (PGD: ce|margin; APGD: "
                  "ce|dlr; default ce).")
    @click.option("--n-target-classes", type=click.IntRange(min=1), help="Targets tried (apgd-t, fab; default 9).")
    @click.option("--version", "aa_version", type=click.Choice(["standard", "rand"]),
                  help="AutoAttack version (default standard).")
    @click.option("--square-queries", type=click.IntRange(min=1), help="Square's queries inside AutoAttack (5000).")
    @click.option("--confidence", type=float, help="C&W kappa (default 0).")
    @click.option("--binary-steps", type=click.IntRange(min=1), help="C&W binary search steps over c (default 9).")
    @click.option("--overshoot", type=float, help="DeepFool overshoot (default 0.02).")
    @click.option("--n-queries", type=click.IntRange(min=1), help="Queries per example (Square; default 5000).")
    @click.option("--max-queries", type=click.IntRange(min=1), help="Query cap per example (HopSkipJump).")
    @click.option("--max-iter", type=click.IntRange(min=1), help="Iterations (HopSkipJump; default 40).")
    @click.option("--target-class", type=int, help="Targeted attack towards this class (examples of that class "
                  "are left out).")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
    @click.option("--query-budget", type=click.IntRange(min=0), help="Stop past this many queries: the summary counts "
                  "the points left unfinished as unknown (never robust) and the exit code is 5.")
    @click.option("--draws", type=click.IntRange(min=1), help="Randomized model: judge every prediction by the "
                  "majority over this many fresh draws (1: treat as deterministic). Default: detected, then 100.")
    @click.option("--device", default="cpu", show_default=True, help="Torch device for zoo/torch models.")
    @click.option("--units", default="raw", show_default=True, help="Units of --eps on flat tabular features: raw, "
                  "range (a fraction of each feature's range), std (of each feature over --data), or a JSON scale "
                  "file with one unit per feature.")
    @click.option("--save-adv", type=click.Path(dir_okay=False), help="Write x_adv, y, success to this .npz.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object (machine output) instead of a table.")
    @click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
    def attack(attack: str, model: str, url: str | None, output: str, http_header: tuple[str, ...],
               timeout: float | None, input_key: str | None, output_key: str | None, scores: str | None,
               retries: int | None, spec_path: str | None, entry_point: str | None, trust_pickle: bool,
               data: str | None, split: str, n: int, eps: float | None, norm: str, steps: int | None,
               alpha: float | None, restarts: int | None, loss: str | None, n_target_classes: int | None,
               aa_version: str | None, square_queries: int | None, confidence: float | None,
               binary_steps: int | None, overshoot: float | None, n_queries: int | None, max_queries: int | None,
               max_iter: int | None, target_class: int | None, seed: int, batch_size: int,
               query_budget: int | None, draws: int | None, device: str, units: str, save_adv: str | None,
               as_json: bool, no_progress: bool) -> None:
        """Run an evasion ATTACK on a model and report clean vs robust accuracy.

        \b
        Examples:
          sparring attack pgd --model digits-cnn --eps 0.1 --n 256
          sparring attack fgsm --model model.onnx --spec spec.json --data test.npz --json
          sparring attack square --url http://127.0.0.1:8000/predict --spec spec.json --data test.npz
          sparring attack autoattack --eps 0.1 --n 200
          sparring attack cw --binary-steps 5 --steps 100 --json
        """
        cls = _attacks()[attack]
        allowed = _option_names(cls)
        if eps is None and inspect.signature(cls).parameters["eps"].default is not None:
            eps = 0.1
        given = {"eps": eps, "norm": norm, "steps": steps, "alpha": alpha, "restarts": restarts, "loss": loss,
                 "n_target_classes": n_target_classes, "version": aa_version, "square_queries": square_queries,
                 "confidence": confidence, "binary_steps": binary_steps, "overshoot": overshoot,
                 "n_queries": n_queries, "max_queries": max_queries, "max_iter": max_iter, "seed": seed}
        for key, value in given.items():
            if value is not None and key not in allowed and key not in ("eps", "norm", "seed"):
                takes = sorted(a.replace("_", "-") for a in allowed if a in given)
                raise click.UsageError(f"--{key.replace('_', '-')} does not apply to {attack}; it takes: "
                                       f"{', '.join('--' + a for a in takes)}.")
        params = {k: v for k, v in given.items() if v is not None and k in allowed}
        api = None
        try:
            from sparring.cli.options import http_settings, require_url
            from sparring.targets.spec import Access

            http = http_settings(http_header, timeout, input_key, output_key, scores, retries)
            require_url(http, url)
            target = _load_target(model, spec_path, entry_point, trust_pickle, device, url=url, output=output,
                                  http=http, white_box=getattr(cls, "needs", None) == Access.GRADIENTS,
                                  batch_size=batch_size, query_budget=query_budget)
            api = target if url else None
            x, y = _load_data(model, data, n, split)
            converted = target if hasattr(target, "check_adversarial") else None  # an ONNX graph run as torch
            if converted is not None:
                converted.check_agreement(x)  # it must answer like onnxruntime on these very inputs
            kwargs: dict[str, Any] = {}
            skipped = 0
            if target_class is not None:
                import torch

                keep = torch.as_tensor(y) != target_class
                skipped = int((~keep).sum())
                x, y = x[keep], y[keep]
                kwargs["target_labels"] = torch.full((len(y),), target_class, dtype=torch.long)
            scale = None
            if units != "raw":  # per-feature budgets: attack the same model in those units (sparring.targets.units)
                from sparring.targets.units import FeatureScale, in_units

                scale = FeatureScale.resolve(units, target.spec, x)
                assert scale is not None
                target, x = in_units(target, scale), scale.to_units(x)
            result = cls(**params)(target, x, y, progress=not (no_progress or as_json) and sys.stderr.isatty(),
                                   draws=draws, **kwargs)
            if scale is not None:
                result.x_adv = scale.from_units(result.x_adv)  # saved and returned in raw units
        except errors.SparringError as exc:
            _fail(exc)
        finally:
            if api is not None:
                api.close()
        summary = result.summary()
        if converted is not None:
            summary["onnx"] = _onnx_adversarial_check(converted, result)
        summary.update(model=model, data=data or f"zoo:{model}:{split}", skipped_target_class=skipped, units=units)
        if url:
            summary.update(model=url, url=url)
        if save_adv:
            _save_adv(Path(save_adv), result)
            summary["saved"] = save_adv
        masking = _masking_warning(cls, result)
        if masking:
            summary["warnings"] = [masking]
        budget_msg = (f"the query budget ({query_budget}) ran out before the attack finished: "
                      f"{summary['n_unknown']} of {summary['n']} points are unknown (neither robust nor broken; not "
                      "counted as robust). Raise --query-budget or lower --n.") if summary["budget_exhausted"] else ""
        if as_json:
            if budget_msg:  # the summary is still the answer; the error keys say it failed, as every --json error
                summary.update(error=budget_msg, type="QueryBudgetExceeded", exit_code=EXIT_BUDGET)
            click.echo(json.dumps(summary, default=str))
        else:
            _print_summary(summary)
        if masking:
            click.echo(f"warning: {masking}", err=True)
        if budget_msg:
            click.echo(f"error (QueryBudgetExceeded): {budget_msg}", err=True)
            sys.exit(EXIT_BUDGET)

    @cli.command(epilog=_EXIT_HELP)
    @click.argument("method", type=click.Choice(["smoothing", "bounds"]))
    @click.option("--model", "-m", default="digits-cnn", show_default=True, help="Zoo name or model file.")
    @click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="InputSpec JSON for a model file.")
    @click.option("--entry-point", help="'package.module:callable' building the nn.Module for a state-dict file.")
    @click.option("--trust-pickle", is_flag=True, help="Allow pickle-based model files (they can run code).")
    @npz_key_options
    @click.option("--data", "-d", type=click.Path(), help="Data file (default: the zoo model's test split).")
    @click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
    @click.option("--n", "n", type=click.IntRange(min=1), default=100, show_default=True, help="Examples to certify.")
    @click.option("--sigma", type=float, default=0.25, show_default=True, help="Smoothing noise (raw input units).")
    @click.option("--n0", type=click.IntRange(min=1), default=100, show_default=True, help="Selection samples.")
    @click.option("--n-samples", type=click.IntRange(min=1), default=10_000, show_default=True,
                  help="Estimation samples per example (Cohen et al. use 100 000).")
    @click.option("--alpha", type=float, default=0.001, show_default=True, help="Failure probability.")
    @click.option("--radii", default="0,0.25,0.5,0.75,1", show_default=True, help="L2 radii to report (smoothing).")
    @click.option("--eps", default="0.01,0.02", show_default=True, help="L∞ budgets to verify (bounds).")
    @click.option("--bound", type=click.Choice(["best", "ibp", "crown"]), default="best", show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
    @click.option("--device", default="cpu", show_default=True)
    @click.option("--url", help="Certify a prediction API at this URL with smoothing (labels suffice; needs --spec, "
                  "or the zoo --model it serves).")
    @click.option("--output", type=click.Choice(["scores", "labels"]), default="scores", show_default=True,
                  help="What the --url API returns.")
    @http_options()
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
    @click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
    def certify(method: str, model: str, spec_path: str | None, entry_point: str | None, trust_pickle: bool,
                data: str | None, split: str, n: int, sigma: float, n0: int, n_samples: int, alpha: float, radii: str,
                eps: str, bound: str, seed: int, batch_size: int, device: str, url: str | None, output: str,
                http_header: tuple[str, ...], timeout: float | None, input_key: str | None, output_key: str | None,
                scores: str | None, as_json: bool, no_progress: bool,
                retries: int | None = None) -> None:
        """Certified accuracy: randomized smoothing (L2 radii, any model) or bound propagation (L∞, torch models).

        \b
        Examples:
          sparring certify smoothing --model digits-cnn --sigma 0.25 --n-samples 10000 --radii 0,0.25,0.5
          sparring certify bounds --model digits-mlp --eps 0.005,0.01 --json
          sparring certify smoothing --url http://127.0.0.1:8000/predict --spec spec.json --data test.npz \\
              --output labels --n-samples 1000
        """
        from sparring.cli.certify import print_certify, run_certify
        from sparring.cli.options import http_settings

        api = None
        try:
            http = http_settings(http_header, timeout, input_key, output_key, scores, retries)
            require_url(http, url)
            if url and method == "bounds":
                raise errors.ParameterError("bound propagation needs the model's graph, which an API does not give: "
                                            "certify a --url with smoothing, or bounds on the model file.")
            target = _load_target(model, spec_path, entry_point, trust_pickle, device, batch_size=batch_size,
                                  white_box=method == "bounds", url=url, output=output, http=http)
            api = target if url else None
            x, y = _load_data(model, data, n, split)
            if hasattr(target, "check_agreement"):
                target.check_agreement(x)  # the converted graph answers like onnxruntime on these inputs
            summary = run_certify(method, target, x, y, sigma=sigma, n0=n0, n_samples=n_samples, alpha=alpha,
                                  radii=radii, eps=eps, bound=bound, seed=seed,
                                  progress=not (no_progress or as_json) and sys.stderr.isatty())
            if hasattr(target, "check_agreement"):
                summary["onnx"] = target.describe()["onnx"]
        except errors.SparringError as exc:
            _fail(exc)
        finally:
            if api is not None:
                api.close()
        print_certify(summary, as_json, url or model)

    @cli.command(epilog=_EXIT_HELP)
    @click.argument("threat_model", required=False, type=click.Path(dir_okay=False))
    @click.option("--out", "-o", "out_dir", default="sparring-report", show_default=True,
                  type=click.Path(file_okay=False), help="Folder for the reports and the checkpoints.")
    @click.option("--resume", is_flag=True, help="Continue an interrupted audit from its checkpoints in --out.")
    @click.option("--format", "formats", default="html,json,markdown,junit", show_default=True,
                  help="Comma-separated report formats.")
    @click.option("--no-progress", is_flag=True, help="Hide per-step progress lines and bars.")
    @click.option("--debug", is_flag=True, help="Print (and keep in report.json) the traceback of a step that fails.")
    @click.option("--baseline", "baseline", default=None, type=click.Path(),
                  help="An earlier audit's report.json (or its --out folder): every report shows the per-gate and "
                       "per-step deltas, and gates with max_drop fail when the metric fell by more.")
    @click.option("--history", "history", envvar="SPARRING_HISTORY", show_envvar=True, metavar="URL",
                  help="Record the finished audit (gates, deltas) in this audit history: an SQLite file "
                       "(sqlite:///audits.db or a path) or a PostgreSQL URL; list it with sparring history.")
    @click.option("--executor", type=click.Choice(["local", "processes", "ray"]), default=None,
                  help="Where the steps run: local (one after the other, the default), processes (--workers N on "
                       "this machine) or ray (a Ray cluster, see --ray). Findings are the same on every executor.")
    @click.option("--workers", type=click.IntRange(min=1), default=None,
                  help="Worker processes for --executor processes (default 2; alone, N > 1 implies it), or CPUs "
                       "of a private Ray cluster.")
    @click.option("--ray", "ray_address", metavar="auto|ADDRESS", default=None,
                  help="Run on the Ray cluster at HOST:PORT, or 'auto' (this machine's cluster, or RAY_ADDRESS); "
                       "implies --executor ray. Needs the extra sparring[ray]; see docs/cluster.md.")
    @click.option("--shard-points", type=click.IntRange(min=1), default=None, metavar="K",
                  help="Split each evasion and certification step into tasks of K points, merged into one step "
                       "result, so one big step spreads over the workers. The shard size is part of the step (the "
                       "report is the same on every executor, but random starts are drawn per shard).")
    def audit(threat_model: str | None, out_dir: str, resume: bool, formats: str, no_progress: bool,
              debug: bool, baseline: str | None, history: str | None, executor: str | None, workers: int | None,
              ray_address: str | None, shard_points: int | None) -> None:
        """Audit a model as THREAT_MODEL (YAML) describes, and write reports.

        Without THREAT_MODEL the built-in default runs: the zoo digits CNN on its held-out digits against a
        white-box attacker. Write your own with `sparring init`. A step that fails is reported (reports are
        still written) and runs again with --resume. Exit code, first that applies: 130 interrupted, 4 a step
        failed because the model or endpoint did, 6 a gate failed or could not be measured, else 0.

        \b
        Examples:
          sparring audit                         # the built-in default
          sparring audit threat.yaml --out report
          sparring audit threat.yaml --out report --resume
          sparring audit threat.yaml --out new --baseline old/report.json
          sparring audit threat.yaml --out report --history sqlite:///audits.db
          sparring audit threat.yaml --out report --executor processes --workers 2
          sparring audit threat.yaml --out report --ray 127.0.0.1:6379
          sparring audit threat.yaml --out report --workers 2 --shard-points 64
        """
        from sparring.cli.audit import run_audit_command

        sys.exit(run_audit_command(threat_model, out_dir, resume, formats, not no_progress, _fail, debug, baseline,
                                   history, executor=executor, workers=workers, ray_address=ray_address,
                                   shard_points=shard_points))

    @cli.command(epilog=_EXIT_HELP)
    @click.option("--model", "-m", help="Zoo name, model file or URL (default: digits-cnn; with --llm the bundled "
                  "chat model smollm2-135m).")
    @click.option("--llm", is_flag=True, help="An LLM application: write system.llm (the application with a "
                  "planted secret, attack families by effort, ASR gates). Implied by a bundled chat model name or a "
                  ".gguf --model.")
    @click.option("--data", "-d", help="Data file or image folder (default: the zoo model's data).")
    @click.option("--spec", help="InputSpec JSON for a model file.")
    @click.option("--entry-point", help="'package.module:callable' for a state-dict file.")
    @click.option("--n", "n", type=click.IntRange(min=1), default=200, show_default=True)
    @click.option("--output", "-o", "output", default="threat.yaml", show_default=True,
                  type=click.Path(dir_okay=False), help="Where to write the template ('-' for stdout).")
    @click.option("--force", is_flag=True, help="Overwrite an existing file.")
    @click.option("--trust-pickle", is_flag=True, help="Allow pickle-based model files and every type a skops file "
                  "flags (they can run code).")
    @click.option("--trusted-type", "trusted_types", multiple=True, metavar="TYPE",
                  help="A type to trust in a skops file, e.g. sklearn.tree._tree.Tree for forests (repeat).")
    @click.option("--classes", help="Text model: class names in its output order, comma-separated (e.g. "
                  "ok,toxic,threat); needed for a URL or callable.")
    @click.option("--text-col", help="Text model: the text column of --data.")
    @click.option("--label-col", help="Text model: the label column of --data.")
    @click.option("--exposure", type=click.Choice(["scores", "labels"]),
                  help="What a URL --model answers (exposure.output; default scores): labels for an API that "
                       "returns class labels only.")
    @http_options("a URL --model", batch="inputs", answer="scores, or labels with --exposure labels")
    def init(model: str | None, llm: bool, data: str | None, spec: str | None, entry_point: str | None, n: int,
             output: str, force: bool, trust_pickle: bool, trusted_types: tuple[str, ...], classes: str | None,
             text_col: str | None, label_col: str | None, exposure: str | None, http_header: tuple[str, ...],
             timeout: float | None, input_key: str | None, output_key: str | None, scores: str | None,
             retries: int | None = None) -> None:
        """Write an annotated threat-model template for MODEL, pre-filled from the model and its data.

        On tabular data (flat features with different ranges) the budgets are fractions of each feature's range
        (units: range), so eps 0.01 moves every feature by 1 % of its own range. A text model (a skops/joblib
        text pipeline, 'module:callable', a URL with --classes) gets system.text and no spec. A URL with --spec
        (a tensor API) gets system.http from the HTTP options and exposure.output from --exposure; header values
        are written as given, so write secrets as ${VAR}.

        \b
        Examples:
          sparring init --model model.onnx --spec spec.json --data test.npz
          sparring init --model http://127.0.0.1:8000/predict --spec spec.json --data test.npz --exposure labels \\
              --http-header 'Authorization: Bearer ${API_TOKEN}' --timeout 30
          sparring init --llm                                   # the bundled SmolLM2 with a planted secret
          sparring init --llm --model http://127.0.0.1:8000     # an OpenAI-compatible API
        """
        from sparring.audit.template import threat_model_template
        from sparring.cli.options import http_settings
        from sparring.llm.model_files import BUNDLED

        if output != "-" and Path(output).exists() and not force:
            raise click.UsageError(f"{output} exists; pass --force to overwrite it or choose another --output.")
        llm = llm or model in BUNDLED or (model or "").endswith(".gguf")
        model = model or ("smollm2-135m" if llm else "digits-cnn")
        try:
            if llm:
                from sparring.audit.template_llm import llm_threat_model_template

                tensor_only = [f for f, v in (("--data", data), ("--spec", spec), ("--entry-point", entry_point),
                                              ("--classes", classes), ("--exposure", exposure)) if v]
                if tensor_only:
                    raise errors.ParameterError(f"options for a tensor or text model given with --llm: "
                                                f"{', '.join(tensor_only)}; an LLM application is described in "
                                                "system.llm of the template: drop them.")
                text = llm_threat_model_template(model, path="threat.yaml" if output == "-" else output)
                _write_template(text, output)
                return
            http = http_settings(http_header, timeout, input_key, output_key, scores, retries)
            if not model.startswith(("http://", "https://")):
                require_url(http, None, "a URL --model")
                if exposure is not None:
                    raise errors.ParameterError("--exposure describes a URL --model; a model file or zoo model is "
                                                "queried in-process: drop --exposure.")
            text = threat_model_template(model, data=data, spec=spec, entry_point=entry_point, n=n,
                                         trust_pickle=trust_pickle, trusted_types=trusted_types,
                                         path="threat.yaml" if output == "-" else output,
                                         classes=classes.split(",") if classes else None, text_column=text_col,
                                         label_column=label_col, http=http, exposure=exposure)
        except errors.SparringError as exc:
            _fail(exc)
        _write_template(text, output)

    def _write_template(text: str, output: str) -> None:
        if output == "-":
            click.echo(text, nl=False)
        else:
            Path(output).write_text(text, encoding="utf-8")
            click.echo(f"wrote {output}; edit it, then: sparring audit {output}")

    @cli.group()
    def zoo() -> None:
        """The bundled model zoo."""

    @zoo.command("list")
    def zoo_list() -> None:
        """List zoo models."""
        from sparring.data import zoo as _zoo

        for name in _zoo.names():
            click.echo(f"{name:24s} {_zoo.entry(name).description}")

    import importlib

    for module in _COMMAND_MODULES:
        importlib.import_module(f"sparring.cli.{module}").add_commands(cli)
    return cli


def _save_adv(path: Path, result: Any) -> None:
    import numpy as np

    def arr(v: Any) -> Any:
        return v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_adv=arr(result.x_adv), y=arr(result.y), success=arr(result.success),
                        adv_pred=arr(result.adv_pred))


def _masking_warning(cls: type, result: Any) -> str | None:
    """A warning when a gradient attack broke nothing: robust = clean is what masked gradients look like."""
    from sparring.targets.spec import Access

    if getattr(cls, "needs", None) != Access.GRADIENTS or result.n_unknown or result.clean_accuracy == 0:
        return None
    if result.robust_accuracy < result.clean_accuracy:
        return None
    zero = int(result.extras.get("zero_gradient_examples", 0))
    why = f"the loss gradient was exactly zero for {zero} of {result.n} inputs; " if zero else ""
    return (f"robust accuracy equals clean accuracy ({result.clean_accuracy:.3f}): {why}this may be gradient "
            "masking (zero, shattered or obfuscated gradients), not robustness. Check with a gradient-free attack "
            "(sparring attack square / hopskipjump) or run sparring audit, whose checks retry with BPDA/EOT.")


def _print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"{s['attack'].upper()} on {s['model']} ({s['n']} examples, {s['norm']} eps={s['params']['eps']})"
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows: list[tuple[str, Callable[[], str]]] = [
        ("clean accuracy", lambda: f"{s['clean_accuracy']:.3f}"),
        ("robust accuracy", lambda: f"{s['robust_accuracy']:.3f}  (95% CI {s['robust_interval'][0]:.3f}–"
                                    f"{s['robust_interval'][1]:.3f})"),
        ("unknown (budget ran out)", lambda: f"{s['n_unknown']} of {s['n']}"),
        ("attack success rate (on correct)", lambda: f"{s['attack_success_rate']:.3f}"),
        ("median perturbation of successes",
         lambda: "-" if s["median_norm_of_successes"] is None else f"{s['median_norm_of_successes']:.4f}"),
        ("queries / gradients", lambda: f"{s['cost']['queries']} / {s['cost']['gradients']}"),
        *([("randomized model: majority over draws", lambda: f"{s['draws']}"),
           ("single-query fooling rate", lambda: f"{s['single_query_fooling_rate']:.3f}")] if s["draws"] > 1 else []),
        ("seconds", lambda: f"{s['cost']['seconds']:.2f}"),
    ]
    for name, fmt in rows:
        table.add_row(name, fmt())
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``sparring`` command."""
    if click is None:
        sys.stderr.write("The sparring command needs its CLI extra: pip install 'sparring[cli]'\n")
        sys.exit(EXIT_USAGE)
    cli = build_cli()
    try:
        cli.main(args=argv, prog_name="sparring", standalone_mode=True)
    except errors.SparringError as exc:  # pragma: no cover - commands catch their own
        _fail(exc)
