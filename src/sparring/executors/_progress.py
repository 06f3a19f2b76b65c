"""One progress bar over the tasks of a map, drawn on the driver as the outcomes arrive (rich, on stderr)."""

from __future__ import annotations

from typing import Any

__all__ = ["TaskBar"]


class TaskBar:
    """A bar of ``total`` tasks that :meth:`advance` moves by one; draws nothing unless ``enabled``.

    Workers draw no bars of their own (their output would interleave, and on Ray it does not reach the terminal):
    the driver's bar advances when a task's outcome comes back, whichever worker or node ran it.

    >>> with TaskBar(3, "audit", enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.advance()
    >>> bar.done
    3
    """

    def __init__(self, total: int, description: str = "tasks", *, enabled: bool = True) -> None:
        self.total, self.description, self.enabled = total, description, enabled
        self.done = 0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> TaskBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def advance(self) -> None:
        self.done += 1
        if self._progress is not None:
            self._progress.advance(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
