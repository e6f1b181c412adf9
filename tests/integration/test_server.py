"""``serve()`` and ``python -m trio_asgi_ws``: real hypercorn, real sockets, real signals."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from starlette.applications import Starlette
from trio_websocket import ConnectionClosed, ConnectionRejected

from tests.integration.conftest import open_client, start_hypercorn
from tests.integration.served import (
    REPO,
    drain_stderr,
    hold_reading_clients,
    router_with_an_echo,
    served,
    start_cli,
    stop_process,
)
from trio_asgi_ws import WebSocket
from trio_asgi_ws.__main__ import load_app, main
from trio_asgi_ws._types import Receive, Scope, Send
from trio_asgi_ws.routing import Router
from trio_asgi_ws.server import StartupFailed, build_config, serve

DEADLINE = 15.0


# -- in-process serve() -------------------------------------------------------------------------


def ticker_and_echo() -> Router:
    app = router_with_an_echo()

    @app.websocket("/tick")
    async def tick(ws: WebSocket) -> None:
        await ws.accept()
        while True:
            await ws.send_text("tick")
            await trio.sleep(0.05)

    return app


async def test_shutdown_trigger_closes_every_websocket_with_1001_before_stopping() -> None:
    codes: list[int] = []
    async with served(ticker_and_echo()) as server:

        async def client(path: str) -> None:
            async with open_client(server.url(path)) as ws:
                if path == "/echo":
                    await ws.send_message("hi")
                assert await ws.get_message() in ("hi", "tick")
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await ws.get_message()
                codes.append(info.value.reason.code)

        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as clients:
                for path in ("/tick", "/echo", "/tick", "/echo"):
                    clients.start_soon(client, path)
                await trio.sleep(0.3)
                server.trigger.set()
            await server.stopped.wait()
    assert codes == [1001] * 4


async def test_messages_over_the_size_limit_are_refused_with_1009() -> None:
    async with served(ticker_and_echo(), max_message_size=1000) as server:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url("/echo")) as ws:
                await ws.send_message("x" * 1000)
                assert len(await ws.get_message()) == 1000
                await ws.send_message("x" * 1001)
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
    assert info.value.reason.code == 1009


async def test_an_unmatched_path_is_rejected_with_403_by_the_real_server() -> None:
    async with served(ticker_and_echo()) as server:
        with trio.fail_after(DEADLINE), pytest.raises(ConnectionRejected) as info:
            async with open_client(server.url("/nowhere")):
                pass
    assert info.value.status_code == 403


# -- a failed lifespan startup --------------------------------------------------------------------


def failing_startup(framework: str) -> Any:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    if framework == "starlette":
        return Starlette(lifespan=lifespan)
    return Router(lifespan=lifespan)


@pytest.mark.parametrize("framework", ["ours", "starlette"])
async def test_serve_raises_startup_failed_without_ever_serving(
    framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            with pytest.raises(StartupFailed) as info:  # from start(): it never reported started
                await nursery.start(
                    partial(serve, failing_startup(framework), "127.0.0.1", 0, handle_signals=False)
                )
    assert info.value.summary == "RuntimeError: no database"
    assert str(info.value) == "lifespan startup failed: RuntimeError: no database"
    assert info.value.message.startswith("Traceback (most recent call last):\n")
    assert "Running on" not in caplog.text  # hypercorn never bound a socket


FAILING_APP = """
from contextlib import asynccontextmanager
from trio_asgi_ws.routing import Router

@asynccontextmanager
async def lifespan(app):
    raise RuntimeError("no database")
    yield

app = Router(lifespan=lifespan)
"""


# -- HTTP/1.1 keep-alive (fix 11 in _hypercorn_fixes) -----------------------------------------


async def answer_without_reading_the_request(scope: Scope, receive: Receive, send: Send) -> None:
    """An HTTP app that, like most GET handlers, never calls ``receive()``: its path as the body."""
    body = scope["path"].encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


KEEP_ALIVE_APP = """
from tests.integration.test_server import answer_without_reading_the_request
from trio_asgi_ws.routing import Router

app = Router(default=answer_without_reading_the_request)
"""


@asynccontextmanager
async def http_server(how: str, tmp_path: Path) -> AsyncIterator[int]:
    """``answer_without_reading_the_request`` served by ``serve()``, the CLI or plain hypercorn
    (the behaviour to match); yields the port."""
    app = Router(default=answer_without_reading_the_request)
    if how == "serve":
        async with served(app) as server:
            yield server.port
    elif how == "cli":
        (tmp_path / "keep_alive_app.py").write_text(KEEP_ALIVE_APP)
        process, port, _ = await start_cli("keep_alive_app:app", cwd=tmp_path)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain_stderr, process)
                yield port
                nursery.cancel_scope.cancel()
        finally:
            await stop_process(process)
    else:
        assert how == "hypercorn"
        async with trio.open_nursery() as nursery:
            shutdown = trio.Event()
            yield await start_hypercorn(nursery, answer_without_reading_the_request, shutdown)
            shutdown.set()


class RawHTTP11:
    """One HTTP/1.1 connection on a plain TCP stream, reading each response by its Content-Length."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""

    async def send_requests(self, *paths: str) -> None:
        """Write a GET for each path, all in one write (several: pipelined)."""
        requests = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" for path in paths)
        await self.stream.send_all("".join(requests).encode())

    async def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response's status, headers (lower-cased names) and body."""
        while b"\r\n\r\n" not in self._buffer:
            await self._read_more()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        while len(self._buffer) < length:
            await self._read_more()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return int(status_line.split()[1]), headers, body

    async def _read_more(self) -> None:
        data = await self.stream.receive_some()
        assert data, f"the server closed the connection; unread: {self._buffer!r}"
        self._buffer += data


@pytest.mark.parametrize("how", ["serve", "cli", "hypercorn"])
async def test_keep_alive_requests_are_all_answered(how: str, tmp_path: Path) -> None:
    """Three requests one after another on one connection, to an app that never reads its
    requests (``examples/chat.py``'s ``GET /rooms/<room>``, polled by its page): each is answered
    on the same connection, as plain hypercorn does."""
    async with http_server(how, tmp_path) as port:
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            connection = RawHTTP11(stream)
            for path in ("/rooms/a", "/rooms/b", "/rooms/c"):
                with trio.fail_after(DEADLINE):
                    await connection.send_requests(path)
                    status, headers, body = await connection.read_response()
                assert (status, body) == (200, path.encode())
                assert headers.get("connection") != "close"


@pytest.mark.parametrize("how", ["serve", "hypercorn"])
async def test_pipelined_requests_are_all_answered(how: str, tmp_path: Path) -> None:
    """Two requests written at once, then a third once they are answered: hypercorn answers a
    pipelined request once the one before it is done, and so must ``serve()``."""
    async with http_server(how, tmp_path) as port:
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            connection = RawHTTP11(stream)
            with trio.fail_after(DEADLINE):
                await connection.send_requests("/first", "/second")
                answers = [await connection.read_response() for _ in range(2)]
                await connection.send_requests("/third")
                answers.append(await connection.read_response())
            assert [(status, body) for status, _, body in answers] == [
                (200, b"/first"),
                (200, b"/second"),
                (200, b"/third"),
            ]


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_cli_exits_3_with_one_clear_line_when_startup_fails(tmp_path: Path, workers: int) -> None:
    (tmp_path / "failing.py").write_text(FAILING_APP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)])}
    command = [sys.executable, "-m", "trio_asgi_ws", "failing:app", "--port", "0", "--workers", str(workers)]
    with trio.fail_after(DEADLINE):
        result = await trio.run_process(command, cwd=tmp_path, env=env, capture_stderr=True, check=False)
    log = result.stderr.decode()
    assert result.returncode == 3, log
    failures = [line for line in log.splitlines() if "startup failed" in line]
    expected = (
        "trio_asgi_ws ERROR Lifespan startup failed, not serving (exit status 3): RuntimeError: no database"
    )
    # One line per worker that got as far as its startup (with two, the first to fail can stop
    # the other before then), followed by the app's traceback and nothing else.
    assert 1 <= len(failures) <= workers
    assert [line.split(" ", 2)[2] for line in failures] == [expected] * len(failures)
    assert log.count("Traceback (most recent call last)") == len(failures)
    assert "Running on" not in log
    assert "Exception Group" not in log


async def test_the_cli_says_in_one_line_that_redis_cannot_be_reached_and_exits_3(tmp_path: Path) -> None:
    """An environment failure (an OSError such as ConnectionError) is one line, no traceback; the
    chat example with its hub on a Redis that is not running."""
    with socket.socket() as unused:  # a port where no Redis listens
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    env = {**os.environ, "PYTHONPATH": str(REPO), "BROADCAST_URL": url}
    command = [sys.executable, "-m", "trio_asgi_ws", "examples.chat:app", "--port", "0"]
    with trio.fail_after(DEADLINE):
        result = await trio.run_process(command, cwd=REPO, env=env, capture_stderr=True, check=False)
    log = result.stderr.decode()
    assert result.returncode == 3, log
    (line,) = log.splitlines()
    assert line.split(" ", 2)[2] == (
        "trio_asgi_ws ERROR Lifespan startup failed, not serving (exit status 3): ConnectionError: "
        f"cannot reach Redis at {url}: Unable to establish a connection to 127.0.0.1:{port}"
    )


SILENT_FAILURE = """
async def app(scope, receive, send):
    await receive()
    await send({"type": "lifespan.startup.failed", "message": ""})
"""


def test_a_startup_failure_without_a_message_is_still_named_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "silent_failure.py").write_text(SILENT_FAILURE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.INFO):
        assert main(["silent_failure:app", "--port", "0"]) == 3
    failures = [r.getMessage() for r in caplog.records if "startup failed" in r.getMessage()]
    assert failures == ["Lifespan startup failed, not serving (exit status 3): (the app gave no message)"]
    assert str(StartupFailed(" \n")) == "lifespan startup failed: (the app gave no message)"


def test_build_config_suits_websockets_and_rejects_bad_options() -> None:
    config = build_config()
    assert config.websocket_max_message_size == 1024 * 1024
    assert config.websocket_ping_interval == 20.0
    assert config.read_timeout == 60
    assert config.bind == ["127.0.0.1:8000"]
    assert build_config("::1", 9000).bind == ["[::1]:9000"]
    assert build_config(keep_alive_timeout=2).keep_alive_timeout == 2
    with pytest.raises(TypeError, match="unknown server option 'colour'"):
        build_config(colour="blue")
    with pytest.raises(ValueError, match=r"read_timeout .* must be longer than ping_interval"):
        build_config(ping_interval=30, read_timeout=10)
    with pytest.raises(ValueError, match="max_message_size must be positive"):
        build_config(max_message_size=0)
    assert config.send_timeout == 10.0
    assert config.compression is None
    assert build_config(send_timeout=None, compression="deflate").compression == "deflate"
    with pytest.raises(ValueError, match="send_timeout must be positive seconds or None, got 0"):
        build_config(send_timeout=0)
    with pytest.raises(ValueError, match="compression must be 'deflate' or None, got 'gzip'"):
        build_config(compression="gzip")  # type: ignore[arg-type]


def test_the_cli_refuses_a_certfile_without_its_keyfile(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["examples.echo:app", "--certfile", "cert.pem"])
    assert info.value.code == 2
    assert "--certfile and --keyfile go together" in capsys.readouterr().err


# -- the command line -----------------------------------------------------------------------------


def test_load_app_reports_bad_targets_clearly() -> None:
    assert load_app("examples.echo:app") is not None
    with pytest.raises(ValueError, match="expected 'module:attribute'"):
        load_app("examples.echo")
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        load_app("examples.echo:nope")
    with pytest.raises(ImportError):
        load_app("no_such_module_here:app")


def test_the_cli_exits_2_with_a_message_for_a_bad_app(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["examples.echo:missing"])
    assert info.value.code == 2
    assert "has no attribute 'missing'" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_closes_20_open_websockets_with_1001_and_exits_0(workers: int) -> None:
    graceful = 5.0
    process, port, _ = await start_cli(
        "examples.echo:app", "--workers", str(workers), "--graceful-timeout", str(graceful)
    )
    codes: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_stderr, process)
            ready = trio.Event()
            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as clients:
                    clients.start_soon(hold_reading_clients, port, 20, codes, ready)
                    await ready.wait()
                    process.send_signal(signal.SIGTERM)
                    signalled = trio.current_time()
            with trio.fail_after(DEADLINE):
                returncode = await process.wait()
            exited_after = trio.current_time() - signalled
    finally:
        await stop_process(process)
    assert codes == [1001] * 20
    assert returncode == 0
    assert exited_after < graceful  # within the grace period the issue asks for


async def test_reload_restarts_the_worker_when_a_source_file_changes(tmp_path: Path) -> None:
    module = tmp_path / "reloadable.py"
    source = textwrap.dedent(
        """
        from trio_asgi_ws.routing import Router
        app = Router()
        @app.websocket("/")
        async def version(ws):
            await ws.accept()
            await ws.send_text("VERSION")
            async for _ in ws.iter_text():
                pass
        """
    )
    module.write_text(source.replace("VERSION", "one"))
    # No pings: trio-websocket 0.12 fails answering one that arrives while it is closing.
    process, port, _ = await start_cli(
        "reloadable:app", "--reload", "--ping-interval", "0", "--read-timeout", "0", cwd=tmp_path
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_stderr, process)
            codes: list[int] = []
            with trio.move_on_after(DEADLINE):  # trio-websocket may linger on the TCP close
                async with open_client(f"ws://127.0.0.1:{port}/") as ws:
                    assert await ws.get_message() == "one"
                    module.write_text(source.replace("VERSION", "two"))
                    with pytest.raises(ConnectionClosed) as info:
                        await ws.get_message()
                    codes.append(info.value.reason.code)
            assert codes == [1001]
            assert await first_message_once_serving(port) == "two"
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(DEADLINE):
                assert await process.wait() == 0
    finally:
        await stop_process(process)


async def test_reload_waits_out_a_broken_module_and_serves_again_once_fixed(tmp_path: Path) -> None:
    module = tmp_path / "fragile.py"
    good = textwrap.dedent(
        """
        from trio_asgi_ws.routing import Router
        app = Router()
        @app.websocket("/")
        async def hello(ws):
            await ws.accept()
            await ws.send_text("VERSION")
        """
    )
    module.write_text(good.replace("VERSION", "first"))
    process, port, _ = await start_cli(
        "fragile:app", "--reload", "--ping-interval", "0", "--read-timeout", "0", cwd=tmp_path
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_stderr, process)
            module.write_text("this is not python(\n")
            await trio.sleep(2.5)  # the supervisor notices, restarts, the worker dies on import
            assert process.returncode is None  # the supervisor waits for the next change
            module.write_text(good.replace("VERSION", "fixed"))
            assert await first_message_once_serving(port) == "fixed"
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(DEADLINE):
                assert await process.wait() == 0
            nursery.cancel_scope.cancel()
    finally:
        await stop_process(process)


async def first_message_once_serving(port: int) -> str:
    """The first message of a new connection, retried until a (re)started worker serves it."""
    with trio.fail_after(DEADLINE):
        while True:
            with trio.move_on_after(2):  # one attempt; a connection made mid-restart may hang
                try:
                    async with open_client(f"ws://127.0.0.1:{port}/") as ws:
                        return str(await ws.get_message())
                except (OSError, ConnectionRejected, ConnectionClosed):
                    await trio.sleep(0.1)
