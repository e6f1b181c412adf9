"""How the serving fixes are applied: only by serve(), only to its own servers, on a tested hypercorn.

What each fix does is tested by attacking a real server: tests/integration/test_hostile_clients.py.
"""

from __future__ import annotations

import hypercorn.protocol.h2
import hypercorn.protocol.h11
import hypercorn.trio.run
import pytest
import trio
from hypercorn.config import Config
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio.tcp_server import TCPServer

import trio_asgi_ws
from tests.integration.served import served
from trio_asgi_ws import _hypercorn_fixes
from trio_asgi_ws._hypercorn_fixes import GuardedConfig, applied
from trio_asgi_ws.routing import Router


def hypercorn_is_as_released() -> bool:
    return (
        hypercorn.trio.run.TCPServer is TCPServer
        and hypercorn.protocol.h11.WSStream is WSStream
        and hypercorn.protocol.h2.WSStream is WSStream
    )


def test_importing_the_library_leaves_hypercorn_alone() -> None:
    assert trio_asgi_ws.__version__
    assert hypercorn_is_as_released()


def test_fixes_are_in_place_while_serve_runs_and_gone_after() -> None:
    async def main() -> None:
        async with served(Router()), served(Router()):  # two servers in one process
            assert not hypercorn_is_as_released()
        assert hypercorn_is_as_released()

    trio.run(main)


def test_only_a_guarded_config_gets_the_corrected_classes() -> None:
    with applied():
        factory = hypercorn.protocol.h11.WSStream
        args = (None, None, False, None, None, None, 1)  # context, task group, ssl, client, server, send, id
        assert type(factory(None, Config(), *args)) is WSStream  # a plain hypercorn server in the process
        assert isinstance(factory(None, GuardedConfig(), *args), WSStream)
        assert type(factory(None, GuardedConfig(), *args)) is not WSStream
    assert hypercorn_is_as_released()


def test_an_untested_hypercorn_is_refused_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_hypercorn_fixes, "version", lambda name: "0.99.0")
    with pytest.raises(RuntimeError, match=r"tested on hypercorn 0\.18\.0, not 0\.99\.0"), applied():
        pass
    assert hypercorn_is_as_released()
