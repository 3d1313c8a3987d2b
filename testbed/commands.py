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


# Where a command keeps its filters, per command name; an insert has none.
FILTERS_OF: dict[str, Callable[[dict], list]] = {
    "find": lambda command: [command.get("filter", {})],
    "findAndModify": lambda command: [command.get("query", {})],
    "update": lambda command: [update["q"] for update in command.get("updates", [])],
    "delete": lambda command: [delete["q"] for delete in command.get("deletes", [])],
    "insert": lambda command: [],
}

# Commands that read documents and have no `{_id: value}` form: always a scan on FerretDB v1.
READS_WITHOUT_POINT_FORM = ("aggregate", "count", "distinct")


def is_point_filter(query: dict) -> bool:
    """Whether a filter is exactly `{_id: scalar}`: the only one FerretDB v1 pushes down to its storage."""
    return list(query) == ["_id"] and not isinstance(query["_id"], dict | list)


def in_count(query: dict) -> int:
    """How many `_id`s a filter of exactly `{_id: {$in: [...]}}` names; 0 for any other filter."""
    value = query.get("_id") if list(query) == ["_id"] else None
    return len(value["$in"]) if isinstance(value, dict) and list(value) == ["$in"] else 0


class FilterWatch(monitoring.CommandListener):
    """Every command a watched client sends to `collections` while `watching()` says so, with its filters.

    `stray` lists those that are neither an insert nor a filter of exactly `{_id: scalar}`, except
    the scans a caller names as (command, collection, filter fields), e.g. a cart cleared by user_id,
    and a filter of exactly `{_id: {$in: ids}}` naming more than `one_by_one_at_most` ids.
    """

    def __init__(self, collections: set[str], watching: Callable[[], bool],
                 scans_named: frozenset[tuple[str, str, tuple]] = frozenset(),
                 one_by_one_at_most: int | None = None) -> None:
        self.collections = collections
        self.watching = watching
        self.scans_named = scans_named
        self.one_by_one_at_most = one_by_one_at_most
        self.seen: list[tuple[str, str, list]] = []
        self.stray: list[tuple[str, str, object]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        collection = event.command.get(name)
        if not isinstance(collection, str) or collection not in self.collections or not self.watching():
            return
        if name in READS_WITHOUT_POINT_FORM:
            self.stray.append((name, collection, None))
            return
        if name not in FILTERS_OF:
            return  # not a read or write of documents (createIndexes, ...)
        filters = FILTERS_OF[name](event.command)
        self.seen.append((name, collection, filters))
        for query in filters:
            many = self.one_by_one_at_most is not None and in_count(query) > self.one_by_one_at_most
            if not is_point_filter(query) and not many and \
                    (name, collection, tuple(sorted(query))) not in self.scans_named:
                self.stray.append((name, collection, query))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def clear(self) -> None:
        """Forget what was seen."""
        self.seen, self.stray = [], []


class WriteCommands(monitoring.CommandListener):
    """The write commands (insert, update, findAndModify, delete) sent to one collection by any thread while watching.

    Register it before the clients to watch are made (pymongo's listeners apply to clients made afterwards).
    """

    def __init__(self, collection: str) -> None:
        self.collection = collection
        self.watching = False
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if self.watching and name in ("insert", "update", "findAndModify", "delete") and \
                event.command.get(name) == self.collection:
            self.names.append(name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def during(self, work: Callable[[], object]) -> list[str]:
        """The write commands sent while `work()` runs."""
        self.names, self.watching = [], True
        try:
            work()
        finally:
            self.watching = False
        return self.names
