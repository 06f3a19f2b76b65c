"""LLM applications in a threat model: ``system.llm`` and loading the chat model and the application for an audit.

An LLM system names the chat model in ``system.model`` (a bundled name such as ``smollm2-135m``, a ``.gguf`` file, a
transformers folder, or the ``http(s)://`` address of an OpenAI-compatible API) and the application in
``system.llm``, either as the path of an ``app.yaml`` (the file of ``sparring redteam``, see
:mod:`sparring.llm.app`) or inline under ``application:`` with the same keys::

    system:
      model: smollm2-135m
      llm:
        app: app.yaml                 # or application: {system_prompt: ..., secret: ..., defences: [...]}
        defences: [none, output-filter]   # configurations to measure (default: none, plus all when listed)
        max_new_tokens: 32
        batch_size: 8
    effort: quick
    gates:
      - {metric: secret_leak_asr_upper, max: 0.01}                        # the deployed configuration
      - {metric: secret_leak_asr_upper, method: output-filter, max: 0.3}  # one defence configuration

Relative paths start at the working directory, as everywhere in a threat model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from sparring.errors import ParameterError, ThreatModelError

__all__ = ["LlmAppTarget", "LlmSystem", "load_application_of", "load_llm_system"]


class LlmSystem(BaseModel):
    """``system.llm``: the application (a file or inline), the defence configurations, decoding and budgets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app: str | None = None
    """Path of the application YAML (the file ``sparring redteam`` reads)."""
    application: dict[str, Any] | None = None
    """The application inline, with the keys of an app.yaml."""
    defences: list[str] | None = Field(None, min_length=1)
    """Defence configurations to measure: ``none``, ``all``, ``each`` or defence names (see
    sparring.llm.defenses.defence_configs); default ``none``, plus ``all`` when the application lists defences."""
    attacks: list[str] | None = Field(None, min_length=1)
    """Attack families to run (default: every fixed-payload family that writes where the application takes
    untrusted text, Crescendo, PAIR at effort thorough, and GCG when the chat model is local)."""
    gcg_goals: int | None = Field(None, ge=1, le=6)
    """GCG goals (default by effort: quick 1, standard 3, thorough 6)."""
    gcg_steps: int | None = Field(None, ge=1)
    """Most GCG steps per goal (default by effort: quick 10, standard 20, thorough 50)."""
    converters: list[str] | None = Field(None, min_length=1)
    """Converters on top of every payload (default by effort: ``none``; thorough adds base64 and leetspeak)."""
    max_new_tokens: int = Field(32, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1)
    api_model: str = "default"
    """The model name sent to an OpenAI-compatible API."""
    api_key_env: str | None = None
    """Environment variable holding the API key (never written to reports)."""
    timeout: float = Field(60.0, gt=0)
    retries: int = Field(3, ge=0)
    request_budget: int | None = Field(None, ge=1)
    token_budget: int | None = Field(None, ge=1)
    utility: bool = True
    """Also score the shipped benign tasks under each defence configuration (the utility side of each pair)."""

    @field_validator("attacks", "converters")
    @classmethod
    def _known(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        from sparring.llm.attacks import ATTACKS
        from sparring.llm.converters import CONVERTERS
        from sparring.llm.multiturn import MULTITURN_ATTACKS

        known = [*ATTACKS, *MULTITURN_ATTACKS, "gcg"] if info.field_name == "attacks" else list(CONVERTERS)
        bad = [a for a in v or [] if a not in known]
        if bad:
            raise ValueError(f"unknown {info.field_name} {bad}; known: {', '.join(known)}")
        return v

    @model_validator(mode="after")
    def _one_application(self) -> LlmSystem:
        if (self.app is None) == (self.application is None):
            raise ValueError("system.llm needs exactly one of app (the path of an app.yaml) or application (the "
                             "application inline: {system_prompt: ..., secret: ...})")
        return self


class LlmAppTarget:
    """The audited LLM application as a target: the chat model and the application it serves.

    Not a :class:`~sparring.targets.base.Target` (conversations in, text out): it carries what the runner and the
    reports need (``describe``, ``device``, ``access``, ``close``) and the chat target the checks query.
    """

    def __init__(self, chat: Any, app: Any) -> None:
        self.chat, self.app = chat, app
        self._cache: dict[str, list[Any]] = {}
        self.gcg_suffixes: dict[str, dict[str, Any]] = {}
        """GCG optimisations of this audit by key (the suffix of goal i serves every defence configuration)."""

    @property
    def access(self) -> Any:
        from sparring.targets.spec import Access

        return Access.LABELS  # black-box: the attacker sees replies, no scores or gradients

    @property
    def device(self) -> Any:
        import torch

        model = getattr(self.chat, "model", None)
        params = getattr(model, "parameters", None)
        if callable(params):
            try:
                return next(params()).device
            except StopIteration:  # pragma: no cover - a model without parameters
                pass
        return torch.device("cpu")

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": "llm-application", "access": "labels", "application": self.app.name,
                             "system_prompt_sha256": self.app.system_prompt_sha256,
                             "untrusted_inputs": list(self.app.untrusted_inputs),
                             "defences": [s.name for s in self.app.defences], "chat": self.chat.describe()}
        return d

    def chat_batches(self, conversations: list[list[Any]]) -> list[Any]:
        """The chat target's replies to one batch; with deterministic decoding (temperature 0) a batch already
        answered in this audit is answered from memory (the same batch gives the same replies: a defence that only
        acts on the reply is then measured on the very replies of the undefended run, and not queried twice)."""
        if getattr(self.chat, "temperature", 0.0) != 0.0:
            return list(self.chat.chat(conversations))
        import json

        key = json.dumps(conversations, sort_keys=True)
        if key not in self._cache:
            self._cache[key] = list(self.chat.chat(conversations))
        return self._cache[key]

    def close(self) -> None:
        close = getattr(self.chat, "close", None)
        if callable(close):
            close()


def load_application_of(settings: LlmSystem) -> Any:
    """The :class:`~sparring.llm.app.Application` of ``system.llm`` (read from its file or inline).

    Raises:
        ThreatModelError: the file is missing or the application is invalid (a typo names the nearest key).
    """
    import tempfile

    import yaml

    from sparring.llm.app import load_application

    if settings.app is not None:
        return load_application(settings.app)
    with tempfile.TemporaryDirectory() as tmp:  # the inline mapping goes through the app.yaml reader's checks
        path = Path(tmp) / "application.yaml"
        path.write_text(yaml.safe_dump(settings.application, sort_keys=False), encoding="utf-8")
        try:
            return load_application(path)
        except ThreatModelError as exc:
            raise ThreatModelError(str(exc).replace(str(path), "system.llm.application")) from None


def _chat_target(tm: Any, s: LlmSystem) -> Any:
    model: str = tm.system.model
    if model.startswith(("http://", "https://")):
        from sparring.llm.openai_api import OpenAIChatClient

        return OpenAIChatClient(model, model=s.api_model, api_key_env=s.api_key_env, max_new_tokens=s.max_new_tokens,
                                temperature=s.temperature, seed=tm.seed, request_budget=s.request_budget,
                                token_budget=s.token_budget, timeout=s.timeout, retries=s.retries)
    from sparring.llm.chat import LocalChatModel

    return LocalChatModel.from_files(model, device=tm.system.device, max_new_tokens=s.max_new_tokens,
                                     temperature=s.temperature, seed=tm.seed, batch_size=s.batch_size,
                                     request_budget=s.request_budget, token_budget=s.token_budget)


def load_llm_system(tm: Any, target: Any = None, data: tuple[Any, Any] | None = None
                    ) -> tuple[LlmAppTarget, LlmAppTarget, list[Any], None] | None:
    """``(target, target, [application], None)`` for an LLM system, ``None`` for any other system (the audit data
    is the application itself, as a one-item list; checks read it from ``target.app``).

    An in-memory ``target`` is an :class:`LlmAppTarget` or a :class:`~sparring.llm.chat.ChatTarget` (then the
    application comes from ``system.llm``); ``data`` is refused (an LLM audit's data is its application).
    """
    from sparring.llm.chat import ChatTarget

    settings: LlmSystem | None = getattr(tm.system, "llm", None)
    if isinstance(target, LlmAppTarget):
        if data is not None:
            raise ParameterError("an LLM application is audited on its own attempts: pass no data.")
        return target, target, [target.app], None
    if settings is None:
        if isinstance(target, ChatTarget):
            raise ParameterError("a chat model needs its application: add system.llm: {app: app.yaml} to the threat "
                                 "model, or pass LlmAppTarget(chat, application).")
        return None
    if target is not None and not isinstance(target, ChatTarget):
        raise ParameterError(f"system.llm describes an LLM application; the in-memory target is a "
                             f"{type(target).__name__}: pass a ChatTarget (e.g. LocalChatModel) or LlmAppTarget.")
    if data is not None:
        raise ParameterError("an LLM application is audited on its own attempts: pass no data.")
    app = load_application_of(settings)
    chat = target if target is not None else _chat_target(tm, settings)
    wrapped = LlmAppTarget(chat, app)
    return wrapped, wrapped, [app], None
