"""Hostile records that once cost far more to refuse than to send."""

import json

BODY_LIMIT = 1024 * 1024


def deep_chain(depth: int = 24, key_length: int = 3000, dollar_keys: int = 3000) -> dict:
    """A chain of long keys `depth` deep ending in thousands of `$`-keys (~100 KB)."""
    inner: dict = {f"${index}": 1 for index in range(dollar_keys)}
    for level in range(depth):
        inner = {f"k{level}" * (key_length // 3): inner}
    return inner


def flat_dollars(count: int = 80_000) -> dict:
    """`count` `$`-keys side by side (~800 KB at 80,000)."""
    return {f"${index}": 1 for index in range(count)}


def size(value) -> int:
    """Bytes of a value as a JSON body."""
    return len(json.dumps(value).encode())
