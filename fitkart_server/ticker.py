"""Work done beside a block of code, on a clock: a lease renewed while a spool drains, a read cancelled on a stop."""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def ticking(seconds: float, tick: Callable[[], bool], name: str) -> Iterator[None]:
    """Call `tick` every `seconds` in a thread of its own while the block runs, until it answers False."""
    done = threading.Event()

    def run() -> None:
        while not done.wait(seconds):
            if not tick():
                return

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
