"""Which guard service a configuration asks for; above both :mod:`sparring.guard.service` and
:mod:`sparring.guard.text`, so neither imports the other's caller."""

from __future__ import annotations

from sparring.guard.config import GuardConfig
from sparring.guard.service import GuardService
from sparring.guard.store import Store

__all__ = ["open_service"]


def open_service(config: GuardConfig, *, store: Store | None = None) -> GuardService:
    """The service ``config`` describes: :class:`~sparring.guard.text.TextGuardService` for a text model, else a
    :class:`~sparring.guard.service.GuardService`."""
    if config.model.is_text:
        from sparring.guard.text import TextGuardService

        return TextGuardService(config, store=store)
    return GuardService(config, store=store)
