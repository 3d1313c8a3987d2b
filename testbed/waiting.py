"""Waiting on a condition under a generous deadline, instead of sleeping a fixed time or timing the server."""

import time

# How long a wait may take on a busy 2-core machine before a test gives up.
DEADLINE = 30


def wait_until(check, seconds: float = DEADLINE, interval: float = 0.1) -> bool:
    """Poll `check` until it is true (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
