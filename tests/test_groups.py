"""``_groups``: the one rule for unwrapping a nursery's group, and the owned-nursery idiom."""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing

from trio_asgi_ws._groups import leaves, only_cancelled, open_owned_nursery, raise_unwrapped, unwrapped

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

VIRTUAL_TIME = True


def cancelled() -> trio.Cancelled:
    return trio.Cancelled._create()


def test_leaves_are_depth_first_and_a_plain_error_is_its_own_leaf() -> None:
    a, b, c = ValueError("a"), KeyError("b"), OSError("c")
    assert leaves(a) == [a]
    assert leaves(ExceptionGroup("g", [a, ExceptionGroup("h", [b]), c])) == [a, b, c]


def test_unwrapped_prefers_the_one_real_error_over_cancellations() -> None:
    error = ValueError("x")
    group = BaseExceptionGroup("g", [cancelled(), BaseExceptionGroup("h", [error, cancelled()])])
    assert unwrapped(group) is error


def test_unwrapped_gives_the_first_cancelled_when_there_is_nothing_else() -> None:
    first, second = cancelled(), cancelled()
    assert unwrapped(BaseExceptionGroup("g", [first, second])) is first


def test_two_real_errors_stay_a_group() -> None:
    group = ExceptionGroup("g", [ValueError("x"), KeyError("y")])
    assert unwrapped(group) is group
    with pytest.raises(ExceptionGroup) as raised:
        raise_unwrapped(group)
    assert raised.value is group


def test_raise_unwrapped_keeps_the_errors_own_context_and_cause() -> None:
    cause, context = OSError("cause"), KeyError("context")
    try:
        try:
            raise context
        except KeyError:
            raise ValueError("x") from cause
    except ValueError as caught:
        error = caught
    assert error.__context__ is context
    group = ExceptionGroup("g", [error])
    with pytest.raises(ValueError, match=r"^x$") as raised:
        try:
            raise group
        except ExceptionGroup as inner:
            raise_unwrapped(inner)
    assert raised.value is error
    assert raised.value.__cause__ is cause and raised.value.__context__ is context


def test_only_cancelled() -> None:
    assert not only_cancelled(None)
    assert only_cancelled(cancelled())
    assert only_cancelled(BaseExceptionGroup("g", [cancelled(), BaseExceptionGroup("h", [cancelled()])]))
    assert not only_cancelled(BaseExceptionGroup("g", [cancelled(), ValueError("x")]))
    assert not only_cancelled(ValueError("x"))


async def test_an_owned_nursery_cancels_its_tasks_when_the_body_ends() -> None:
    ended: list[str] = []

    async def background() -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.append("background")

    async with open_owned_nursery() as nursery:
        nursery.start_soon(background)
        await trio.testing.wait_all_tasks_blocked()
    assert ended == ["background"]


async def test_an_owned_nursery_raises_a_lone_error_as_itself() -> None:
    error = ValueError("body")

    async def background() -> None:
        await trio.sleep_forever()

    with pytest.raises(ValueError, match=r"^body$") as raised:
        async with open_owned_nursery() as nursery:
            nursery.start_soon(background)
            raise error
    assert raised.value is error


async def test_an_owned_nursery_raises_a_tasks_error_as_itself() -> None:
    async def failing() -> None:
        raise KeyError("task")

    with pytest.raises(KeyError, match="task"):
        async with open_owned_nursery() as nursery:
            nursery.start_soon(failing)
            await trio.sleep_forever()
