"""Plan and run an audit, one checkpoint per step, resumable.

``run_audit(threat_model, out_dir)`` loads the system, plans the checks, runs each step with a seed derived from the
threat model's seed and the step's id (so a step gives the same result whether it runs first or after a resume),
writes ``out_dir/checkpoints/NNN.json`` after every step, and returns an :class:`Audit` that the report writers
turn into HTML, JSON, Markdown and JUnit. With ``resume=True`` finished steps are read back instead of re-run; a
checkpoint from a different threat model is refused. Ctrl-C abandons the step in progress and returns an audit
marked ``"interrupted"`` holding the finished steps (their checkpoints stay, so ``resume=True`` picks up there).

An audit never dies of a check: any exception a step raises (a bug, an unsupported model, an endpoint that went
down) becomes a step result with status ``"error"``, a finding, and unmeasured (failing) gates for what the step
would have measured; every other step still runs. Errored steps are not checkpointed, so ``resume=True`` runs them
again. :attr:`Audit.faults` are the errors of the model or endpoint itself (``sparring audit`` exits 4 on them).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from sparring.audit.findings import Finding, GateResult, evaluate_gates, find
from sparring.audit.registry import CHECKS, PlanContext, RunContext, Skip, Step, StepResult
from sparring.audit.threat import ThreatModel
from sparring.errors import AccessError, CheckpointError, EndpointError, ModelLoadError
from sparring.executors import Executor, LocalExecutor, Outcome, TaskBar, shard_seed
from sparring.executors._ship import pack_target as _pack_target
from sparring.executors._ship import unpack_target as _unpack_target
from sparring.targets.base import Target

__all__ = ["Audit", "Plan", "is_fault", "load_system", "plan_audit", "run_audit"]


@dataclass
class Plan:
    steps: list[Step]
    skipped: list[Skip]

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [s.to_dict() for s in self.steps], "skipped": [s.to_dict() for s in self.skipped]}


@dataclass
class Audit:
    """The outcome of an audit: what was planned, what each step found, gates, findings, environment."""

    threat_model: ThreatModel
    plan: Plan
    results: list[StepResult]
    status: Literal["complete", "interrupted"]
    environment: dict[str, Any]
    target: dict[str, Any]
    gates: list[GateResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    """The comparison with an earlier report (sparring.audit.baseline.apply_baseline), None without one."""

    @property
    def errors(self) -> list[StepResult]:
        """The steps that could not run (each also a finding; the gates they would have measured are unmeasured)."""
        return [r for r in self.results if r.status == "error"]

    @property
    def faults(self) -> list[StepResult]:
        """The errored steps whose cause is the model or endpoint (unreachable, cannot load, refuses access)."""
        return [r for r in self.errors if r.fault]

    @property
    def verdict(self) -> Literal["pass", "fail", "no gates"]:
        if not self.gates:
            return "no gates"
        return "pass" if all(g.passed for g in self.gates) else "fail"


# ---------------------------------------------------------------------------------------------- loading
def load_system(
    tm: ThreatModel, target: Target | None = None, data: tuple[Any, Any] | None = None
) -> tuple[Target, Target, torch.Tensor, torch.Tensor]:
    """The target (full access), the target as the attacker sees it, and the audit data ``(x, y)``.

    ``target`` and ``data`` replace ``tm.system.model`` and ``tm.system.data`` (an in-memory model under audit).
    The system's kind (:mod:`sparring.audit.model_kinds`) decides what they are: a tensor model gives tensors, a
    text system (:mod:`sparring.audit.text_system`) a text target and ``x`` as a list of messages, an LLM
    application (:mod:`sparring.audit.llm_system`) an :class:`~sparring.audit.llm_system.LlmAppTarget` and ``x``
    as ``[application]``.
    """
    from sparring.audit.model_kinds import load_any

    return load_any(tm, target, data)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------- planning
def plan_audit(tm: ThreatModel, target: Target) -> Plan:
    """Ask every registered check what it would run for this threat model, and why (or why not)."""
    import sparring.audit.checks  # noqa: F401  (registers the built-in checks)
    from sparring.audit.model_kinds import kind_of, takes

    ctx = PlanContext(tm, target)
    steps: list[Step] = []
    skipped: list[Skip] = []
    kind = kind_of(target)
    for check in CHECKS.values():
        if not takes(check, kind):
            skipped.append(Skip(check.name, check.threat, kind.skip_reason(check, target)))
            continue
        out = check.plan(ctx)
        if isinstance(out, Skip):
            skipped.append(out)
        else:
            steps.extend(out)
    ids = [s.id for s in steps]
    if len(set(ids)) != len(ids):  # pragma: no cover - a registry bug
        raise RuntimeError(f"duplicate step ids in the plan: {ids}")
    return Plan(steps, skipped)


# ---------------------------------------------------------------------------------------------- running
def run_audit(
    tm: ThreatModel,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    on_step: Any = None,
    target: Target | None = None,
    data: tuple[Any, Any] | None = None,
    debug: bool = False,
    executor: Executor | None = None,
    shard_points: int | None = None,
    on_task: Any = None,
) -> Audit:
    """Run (or resume) the audit of ``tm``, checkpointing into ``out_dir/checkpoints``.

    Args:
        tm: the validated threat model.
        out_dir: where checkpoints (and, by the caller, reports) go.
        resume: reuse finished steps from a previous run of the same threat model.
        progress: show progress bars.
        on_step: optional callback ``(index, total, step, result, from_checkpoint)`` after each step.
        target, data: audit this in-memory target on this ``(x, y)`` instead of loading ``tm.system`` (the threat
            model then only names them; its hash does not cover an in-memory model, so do not resume across models).
        debug: keep the traceback of a step that raised (``StepResult.traceback``).
        executor: where the steps run (:mod:`sparring.executors`): None or ``LocalExecutor()`` in this process, one
            after the other (the default); a ``ProcessExecutor`` or ``RayExecutor`` runs them at once, each worker
            re-loading the system from ``tm`` (or from the shipped in-memory ``target``/``data``). Every step keeps
            its seed, so the findings and gates are the same whichever executor ran them; checkpoints are written
            here, on the driver, as the results arrive, so ``resume`` works whatever executor ran the first part.
        shard_points: run every step whose check can be sharded (evasion, certification) as tasks of this many
            points each, merged on the driver (:mod:`sparring.audit.shards`); the shard size is recorded in the
            step's params, so the results depend on it but not on the executor or its number of workers.
        on_task: optional callback ``(finished, total, step, shard)`` as each task's outcome arrives on the driver
            (``shard``: the shard index, None for a whole step). With ``progress`` and a non-local executor, one bar
            over the tasks advances here too.

    Raises:
        CheckpointError: ``resume`` with checkpoints of a different threat model in ``out_dir``.
    """
    started = _dt.datetime.now(_dt.UTC)
    t0 = time.perf_counter()
    given = target is not None
    target, attacker, x, y = load_system(tm, target, data)
    try:
        return _run_loaded(tm, out_dir, resume, progress, on_step, debug, target, attacker, x, y, started, t0,
                           executor, target if given else None, data, shard_points, on_task)
    finally:
        if not given:  # an endpoint the audit connected to itself: close its connections
            for t in {id(target): target, id(attacker): attacker}.values():
                close = getattr(t, "close", None)
                if callable(close):
                    close()


def _run_loaded(tm: ThreatModel, out_dir: str | Path, resume: bool, progress: bool, on_step: Any, debug: bool,
                target: Target, attacker: Target, x: Any, y: Any, started: _dt.datetime, t0: float,
                executor: Executor | None = None, given_target: Target | None = None,
                given_data: tuple[Any, Any] | None = None, shard_points: int | None = None,
                on_task: Any = None) -> Audit:
    from sparring.audit.shards import ShardGather, task_list, with_shards

    plan = plan_audit(tm, target)
    plan.steps[:] = with_shards(plan.steps, shard_points)
    ckdir = Path(out_dir) / "checkpoints"
    spec_hash = tm.spec_hash()
    _prepare(ckdir, spec_hash, plan, resume)
    results: list[StepResult] = []
    status: Literal["complete", "interrupted"] = "complete"

    ex: Executor = executor if executor is not None else LocalExecutor()
    shared: _LiveSystem | _ShippedSystem = (
        _LiveSystem(tm, target, attacker, x, y, progress, debug, str(out_dir), resume)
        if isinstance(ex, LocalExecutor) else _ship(tm, given_target, given_data, debug, str(out_dir), resume))

    def run(steps: list[Step]) -> None:
        base = len(results)
        done: dict[int, StepResult] = {}
        todo: list[int] = []
        for k, step in enumerate(steps):
            cached = _read_checkpoint(ckdir / f"{base + k:03d}.json", step, spec_hash) if resume else None
            if cached is None:
                todo.append(k)
            else:
                done[k] = cached
                if on_step is not None:
                    on_step(base + k, len(plan.steps), step, cached, True)

        tasks, owner = task_list([(steps[k], _step_seed(tm.seed, steps[k].id)) for k in todo], len(x))
        gather = ShardGather(tasks, owner)
        bar = TaskBar(len(tasks), "audit", enabled=progress and not isinstance(ex, LocalExecutor))

        def arrived(j: int, task_outcome: Outcome[StepResult]) -> None:
            bar.advance()
            if on_task is not None:
                on_task(bar.done, len(tasks), tasks[j][0], tasks[j][2][0] if len(tasks[j]) > 2 else None)
            merged = gather.add(j, task_outcome)  # a sharded step: None until its last shard arrived
            if merged is None:
                return
            k, outcome = todo[merged[0]], merged[1]
            step, path = steps[k], ckdir / f"{base + k:03d}.json"
            result = outcome.value if outcome.value is not None else _error_result(
                step, outcome.error or RuntimeError("the task returned nothing"), debug)
            if result.status == "done":  # the driver writes every checkpoint, whatever executor ran the step
                _write_json(path, {"spec_hash": spec_hash, "step": step.to_dict(), "result": result.to_dict()})
            else:  # not finished: a resumed audit runs it again
                path.unlink(missing_ok=True)
            done[k] = result
            if on_step is not None:
                on_step(base + k, len(plan.steps), step, result, False)

        try:
            with bar:
                ex.map(_step_task, tasks, shared=shared, on_result=arrived)
        finally:  # interrupted: keep the finished steps, in plan order
            results.extend(done[k] for k in sorted(done))

    unplanned: list[StepResult] = []  # follow-ups that could not decide: reported after every checkpointed step
    try:
        run(list(plan.steps))
        # Follow-up checks (e.g. the BPDA/EOT retry) decide from the results whether more steps are needed.
        extra: list[Step] = []
        from sparring.audit.model_kinds import kind_of, takes

        for c in CHECKS.values():
            if hasattr(c, "follow_up") and takes(c, kind_of(target)):
                try:
                    extra += c.follow_up(PlanContext(tm, target), list(results))
                except Exception as exc:  # a follow-up that cannot plan is an error step, not a crash
                    stub = Step(f"{c.name}/follow-up", c.name, c.threat, {}, "follow-up of the finished steps")
                    unplanned.append(_error_result(stub, exc, debug))
        if extra:
            extra = with_shards(extra, shard_points)
            plan.steps.extend(extra)
            run(extra)
    except KeyboardInterrupt:
        status = "interrupted"
    results.extend(unplanned)
    env = environment(tm, target, started, time.perf_counter() - t0)
    audit = Audit(tm, plan, results, status, env, target.describe())
    audit.gates = evaluate_gates(tm, results, plan.skipped)
    audit.findings = find(tm, results, audit.gates)
    return audit


@dataclass
class _LiveSystem:
    """The loaded system, for steps that run in this process (the local executor): nothing is copied."""

    tm: ThreatModel
    target: Target
    attacker: Target
    x: Any
    y: Any
    progress: bool
    debug: bool
    out_dir: str | None = None
    resume: bool = False

    def system(self) -> _LiveSystem:
        return self


@dataclass
class _ShippedSystem:
    """What a worker needs to load the system itself: the threat model (a model from a file or the zoo is loaded
    from there, the zoo from its on-disk cache) and, for an in-memory model, the pickled target and the data."""

    token: str
    tm: ThreatModel
    target_blob: bytes | None
    data: tuple[Any, Any] | None
    debug: bool
    out_dir: str | None = None
    resume: bool = False

    def system(self) -> _LiveSystem:
        import sparring.audit.checks  # noqa: F401  (registers the built-in checks in this worker)

        live = _LOADED.get(self.token)
        if live is None:
            target = None if self.target_blob is None else _unpack_target(self.target_blob)
            t, a, x, y = load_system(self.tm, target, self.data)
            live = _LOADED[self.token] = _LiveSystem(self.tm, t, a, x, y, False, self.debug, self.out_dir,
                                                     self.resume)
        return live


_LOADED: dict[str, _LiveSystem] = {}
"""The systems this (worker) process loaded, by the token of the audit that shipped them: loaded once per worker."""


def _ship(tm: ThreatModel, target: Target | None, data: tuple[Any, Any] | None, debug: bool,
          out_dir: str | None = None, resume: bool = False) -> _ShippedSystem:
    blob = None if target is None else _pack_target(target)
    token = hashlib.sha256(tm.spec_hash().encode() + (blob or b"") + os.urandom(8)).hexdigest()
    return _ShippedSystem(token, tm, blob, data, debug, out_dir, resume)


def _step_task(shared: _LiveSystem | _ShippedSystem, task: tuple[Any, ...]) -> StepResult:
    """One audit step as an executor task: the step with its seed, on the system the worker has (or loads once);
    ``(step, seed, (index, start, stop))``: one point shard of it, with the shard's seed."""
    step, seed = task[0], task[1]
    try:
        live = shared.system()
    except Exception as exc:  # the worker cannot load the system: this step's error result, as in-process
        return _error_result(step, exc, shared.debug)
    x, y = live.x, live.y
    if len(task) > 2:
        i, a, b = task[2]
        x, y, seed = x[a:b], y[a:b], shard_seed(seed, i)
    return _run_step(step, RunContext(live.tm, live.target, live.attacker, x, y, seed,
                                      progress=live.progress, out_dir=None if live.out_dir is None
                                      else Path(live.out_dir), resume=live.resume), live.debug)


def _run_step(step: Step, ctx: RunContext, debug: bool = False) -> StepResult:
    try:
        return CHECKS[step.check].run(step, ctx)
    except Exception as exc:  # a step that cannot run is a finding, not a crash of the whole audit
        return _error_result(step, exc, debug)


def is_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is a fault of the model or endpoint (not of the check): it cannot be reached, loaded or used
    as the threat model says. ``sparring audit`` exits 4 when a step fails with one."""
    return isinstance(exc, EndpointError | ModelLoadError | AccessError | ConnectionError | TimeoutError)


def _error_result(step: Step, exc: BaseException, debug: bool) -> StepResult:
    message = str(exc).strip() or "(no message)"
    return StepResult(step_id=step.id, check=step.check, threat=step.threat, params=dict(step.params),
                      status="error", error=f"{type(exc).__name__}: {message}", error_type=type(exc).__name__,
                      fault=is_fault(exc), traceback="".join(traceback.format_exception(exc)) if debug else None)


def _step_seed(seed: int, step_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{step_id}".encode()).hexdigest()[:8], 16)


def _prepare(ckdir: Path, spec_hash: str, plan: Plan, resume: bool) -> None:
    manifest = ckdir / "manifest.json"
    if resume and manifest.exists():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(
                f"{manifest} is unreadable ({exc}); delete {ckdir} and run without --resume."
            ) from exc
        if old.get("spec_hash") != spec_hash:
            raise CheckpointError(
                f"the checkpoints in {ckdir} belong to a different threat model (hash {str(old.get('spec_hash'))[:12]}"
                f", now {spec_hash[:12]}). Use another --out folder, or run without --resume to start over."
            )
    elif ckdir.exists():
        shutil.rmtree(ckdir)
    ckdir.mkdir(parents=True, exist_ok=True)
    _write_json(manifest, {"spec_hash": spec_hash, "steps": [s.id for s in plan.steps]})


def _read_checkpoint(path: Path, step: Step, spec_hash: str) -> StepResult | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["spec_hash"] != spec_hash or data["step"]["id"] != step.id:
            return None
        if data["step"].get("params", {}).get("shard_points") != step.params.get("shard_points"):
            return None  # run with another shard size: other numbers
        result = StepResult.from_dict(data["result"])
        return result if result.status == "done" else None  # an error (older sparring wrote them): run it again
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None  # a torn or foreign file: run the step again


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def environment(tm: ThreatModel, target: Target, started: _dt.datetime, seconds: float) -> dict[str, Any]:
    """Versions, hardware, seeds and the threat model's hash: what another run needs to reproduce this one."""
    import numpy as np

    import sparring

    dev = target.device
    return {
        "sparring": sparring.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(dev),
        "cuda": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "seed": tm.seed,
        "spec_hash": tm.spec_hash(),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
    }
