"""What the Ray backends share: one connection per run, and task results as they finish (Ray is imported
only by the functions here, when a Ray backend runs)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

Key = TypeVar("Key")


@contextlib.contextmanager
def session(address: str | None) -> Iterator[Any]:
    """The ``ray`` module, connected: to the instance of this process if there is one (left open), else to
    ``address`` (``None``: a new local cluster), closed on exit."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def finished(pending: dict[Any, Key]) -> Iterator[tuple[Key, Any, BaseException | None]]:
    """``(key, value, None)`` for each task of ``pending`` (object ref -> key) as it ends, or
    ``(key, None, error)`` (a ``RayError``) when its worker died more often than the task's ``max_retries``."""
    import ray

    pending = dict(pending)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            key = pending.pop(ref)
            try:
                value = ray.get(ref)
            except ray.exceptions.RayError as e:
                yield key, None, e
            else:
                yield key, value, None
