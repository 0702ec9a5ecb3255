"""Bounded, order-keeping parallel map on threads.

OpenCV and file/S3 reads release the GIL, so a few threads per worker keep
every core busy even when a runner gives a shard to one process. The window
bounds how many results are held at once, so memory stays flat.
"""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int, window: int) -> Iterator[R]:
    """``map(fn, items)`` on ``threads`` threads with at most ``window`` results in flight.

    ``fn`` should return errors as values; an exception it raises is re-raised
    here, in order.
    """
    if threads <= 1:
        yield from map(fn, items)
        return
    pending: collections.deque[Future] = collections.deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="encode") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
