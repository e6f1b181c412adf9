"""Internal nurseries that never leak an ExceptionGroup around a single exception.

A class-based async context manager cannot ``yield`` inside ``async with open_nursery()`` (that is
an async generator holding a nursery, which structured concurrency forbids), so it opens its
nursery in ``__aenter__`` and closes it in ``__aexit__``: ``OwnedNursery`` does both, and on the
way out unwraps the group trio puts around a lone error.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, NoReturn

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["OwnedNursery", "raise_single", "single_exception"]


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception a nursery wrapped (several Cancelled count as one), else None."""
    if len(group.exceptions) == 1 or all(isinstance(error, trio.Cancelled) for error in group.exceptions):
        error: BaseException = group.exceptions[0]
        return error
    return None


def raise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the lone exception inside ``group`` as itself; a real group stays a group."""
    error = single_exception(group)
    if error is None:
        raise group
    raise error from error.__cause__


class OwnedNursery:
    """A nursery opened by ``await open()`` and ended by ``await close(...)`` from ``__aexit__``."""

    def __init__(self) -> None:
        self._manager: Any = None
        self.nursery: trio.Nursery

    async def open(self) -> trio.Nursery:
        self._manager = trio.open_nursery()
        self.nursery = await self._manager.__aenter__()
        return self.nursery

    async def close(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        """Cancel what still runs, wait for it, and re-raise a lone error as itself."""
        self.nursery.cancel_scope.cancel()
        try:
            return bool(await self._manager.__aexit__(exc_type, exc, tb))
        except BaseExceptionGroup as group:
            raise_single(group)
