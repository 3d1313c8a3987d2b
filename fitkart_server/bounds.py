"""What one request may cost in words: how many field errors it reports, and how long each is.

A hostile record can hold tens of thousands of bad keys, each under a long path. Reporting
them all made a 100 KB body answer hundreds of megabytes; these caps keep every answer,
stored reject and log line small whatever the input.
"""

MAX_FIELD_ERRORS = 50  # per request: a batch's operations share them
MAX_PATH = 120  # characters of a field's path (key) in an error
MAX_MESSAGE = 200  # characters of one error message
MAX_REASON = 500  # characters of a refusal's one-line reason
MORE = "_more"  # the key that says how many errors were left out
# A stored record, however many writes merged into it (unknown columns accumulate): 1 MiB, the
# body limit, so reading one back or echoing it costs what writing it once could.
MAX_RECORD_BYTES = 1024 * 1024
# Updates per database command: FerretDB v1.24 stops answering an update command of 100 or more.
UPDATES_PER_COMMAND = 99
# Records one answer carries: a batch's echoes (later results leave `record` out) or a list page
# (it ends early, with a cursor to the rest). At least one record always fits.
MAX_ECHO_BYTES = 1024 * 1024


def cut(text: str, limit: int) -> str:
    """The text, or its start and end around an ellipsis when it is longer than `limit`."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return f"{text[:head]}…{text[len(text) - (limit - head - 1):]}"


def cut_bytes(text: str, limit: int) -> str:
    """The text, or its start and end around an ellipsis, within `limit` bytes of UTF-8."""
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head - 3  # the ellipsis is three bytes
    return f"{encoded[:head].decode('utf-8', 'ignore')}…{encoded[len(encoded) - tail:].decode('utf-8', 'ignore')}"


def more_message(count: int | None) -> list[str]:
    """The one message standing for the errors left out (how many, when known)."""
    return [f"…and {count} more." if count else "…and more, not counted."]


class ErrorBudget:
    """How many more field errors may be reported; one budget per request."""

    def __init__(self, limit: int = MAX_FIELD_ERRORS) -> None:
        self.remaining = limit

    def take(self, messages) -> dict:
        """Marshmallow-shaped messages within the budget: keys and messages cut, the rest counted."""
        left_out = 0
        uncounted = isinstance(messages, dict) and MORE in messages  # the unstorable check stops early

        def keep(node) -> dict | list:
            nonlocal left_out
            if isinstance(node, dict):
                kept = {}
                for key, child in node.items():
                    if key == MORE:
                        continue
                    if self.remaining <= 0:
                        left_out += _leaves(child)
                    else:
                        kept[cut(str(key), MAX_PATH)] = keep(child)
                return kept
            items = node if isinstance(node, list) else [node]
            shown = items[:self.remaining]
            self.remaining -= len(shown)
            left_out += len(items) - len(shown)
            return [cut(str(item), MAX_MESSAGE) for item in shown]

        kept = keep(messages if isinstance(messages, dict) else {"_schema": messages})
        if left_out or uncounted:
            kept[MORE] = more_message(None if uncounted else left_out)
        return kept


def _leaves(node) -> int:
    """How many messages a (nested) messages structure holds."""
    if isinstance(node, dict):
        return sum(_leaves(child) for child in node.values())
    return len(node) if isinstance(node, list) else 1
