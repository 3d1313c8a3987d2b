"""The database commands a thread sends, counted with pymongo's command monitoring (tests and benchmarks)."""

import threading
from collections.abc import Callable

from pymongo import monitoring


class RequestCommands(monitoring.CommandListener):
    """The database commands one thread sends while it is being watched.

    pymongo's listeners are process-wide and apply to clients made after registering, so
    register one before the app makes its client; it records nothing unless watching.
    """

    def __init__(self) -> None:
        self.thread: int | None = None
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if threading.get_ident() == self.thread:
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def during(self, send: Callable[[], object]) -> list[str]:
        """The commands `send()` made on this thread."""
        self.names, self.thread = [], threading.get_ident()
        try:
            send()
        finally:
            self.thread = None
        return self.names
