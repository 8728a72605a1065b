"""Work in parallel threads for the tests that race database writers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from django.db import connection


def in_threads(work: Callable, args: Sequence, *, timeout: float = 300) -> list[BaseException]:
    """Runs ``work(arg)`` in one thread per arg, released together (a barrier), each on its
    own database connection, closed after; waits for them all (``timeout`` seconds each, then
    none may still run) and returns what they raised."""
    start = threading.Barrier(len(args))
    errors: list[BaseException] = []

    def guarded(arg) -> None:
        try:
            start.wait()
            work(arg)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=guarded, args=(arg,)) for arg in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads)
    return errors
