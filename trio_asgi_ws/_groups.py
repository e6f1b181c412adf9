"""Owned nurseries, and the one way this library unwraps the group trio puts around an error.

Every nursery this library keeps open across a ``yield`` (a hub's backend task, the test
client's app task) is opened with ``open_owned_nursery``, an ``@asynccontextmanager``.  That is
sound: what structured concurrency forbids is an async generator *used as an iterator* holding a
nursery or cancel scope across its ``yield`` (the consumer's code would then run inside a scope it
cannot see, and the generator may be finalised out of order).  A context manager's ``yield`` is
the body of the caller's ``async with``, which runs exactly inside the nursery, as with
``trio.open_nursery`` itself.

Trio wraps whatever leaves a nursery in an ``ExceptionGroup``.  Where a caller expects a single
error (a context manager whose body raised, a block whose background task was only cancelled),
``unwrapped`` takes it out the way trio's own ``raise_single_exception_from_group`` does: the
non-``Cancelled`` error if there is exactly one, else the first ``Cancelled``, keeping that
exception's ``__cause__`` and ``__context__``.  Several real errors stay a group: they are all
news to the caller.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["leaves", "only_cancelled", "open_owned_nursery", "raise_unwrapped", "unwrapped"]


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside ``error``, depth first: itself if it is not a group."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def unwrapped(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error ``group`` stands for: its only non-``Cancelled`` leaf, else a ``Cancelled``.

    Nested groups count by their leaves.  Returns ``group`` itself when it holds two or more
    errors that are not ``Cancelled``.
    """
    every = leaves(group)
    errors = [leaf for leaf in every if not isinstance(leaf, trio.Cancelled)]
    if len(errors) > 1:
        return group
    return errors[0] if errors else every[0]


def raise_unwrapped(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise ``unwrapped(group)``, keeping its own ``__context__`` (not the group's)."""
    error = unwrapped(group)
    if error is group:
        raise group
    context = error.__context__
    try:
        raise error
    finally:
        error.__context__ = context
        del error, context


def only_cancelled(error: BaseException | None) -> bool:
    """Whether ``error`` is a cancellation: a ``Cancelled``, or a group of nothing else."""
    if error is None:
        return False
    return all(isinstance(leaf, trio.Cancelled) for leaf in leaves(error))


@asynccontextmanager
async def open_owned_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose remaining tasks are cancelled when the body ends, raising no lone group.

    On a normal exit the nursery is cancelled (its tasks are background work of the body) and
    waited for.  An error from the body or a task leaves as ``unwrapped`` makes it.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_unwrapped(group)
