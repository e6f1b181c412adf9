"""Unwrapping the ExceptionGroup an internal nursery puts around a single exception."""

from __future__ import annotations

import sys

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["single_exception"]


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception a nursery wrapped (several Cancelled count as one), else None."""
    if len(group.exceptions) == 1 or all(isinstance(error, trio.Cancelled) for error in group.exceptions):
        error: BaseException = group.exceptions[0]
        return error
    return None
