"""Running apps for real: ``served(app)`` in-process, ``start_cli(...)`` as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from tests.integration.conftest import open_client
from trio_asgi_ws import WebSocket
from trio_asgi_ws.routing import Router
from trio_asgi_ws.server import serve


class served:
    """Serve ``app`` on 127.0.0.1 (a free port) in a nursery of its own until the block ends.

    ``server.port``; ``server.trigger`` (set it to start the graceful shutdown early);
    ``server.stopped`` (set once ``serve()`` has returned).
    """

    def __init__(self, app: Any, **options: Any) -> None:
        self._app = app
        self._options = options
        self.trigger = trio.Event()
        self.stopped = trio.Event()
        self.port = 0

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> served:
        self._nursery_manager = trio.open_nursery()
        nursery = await self._nursery_manager.__aenter__()
        binds = await nursery.start(self._serve)
        self.port = int(binds[0].rsplit(":", 1)[1])
        return self

    async def _serve(self, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await serve(
                self._app,
                "127.0.0.1",
                0,
                shutdown_trigger=self.trigger.wait,
                handle_signals=False,
                task_status=task_status,
                **self._options,
            )
        finally:
            self.stopped.set()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self.trigger.set()
        return await self._nursery_manager.__aexit__(*exc_info)  # type: ignore[no-any-return]


REPO = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE = 15.0


async def start_cli(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, new_session: bool = False
) -> tuple[trio.Process, int, list[str]]:
    """Start ``python -m trio_asgi_ws`` on a free port; return it once it serves.

    ``new_session`` puts it in a process group of its own (``os.killpg(process.pid, ...)`` then
    signals it and its workers, as Ctrl-C in a terminal does).
    """
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(REPO), str(cwd)])}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_asgi_ws", *args, "--port", "0"],
        cwd=cwd,
        env=full_env,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=new_session,
    )
    assert process.stderr is not None
    lines: list[str] = []
    buffer = b""
    with trio.fail_after(STARTUP_DEADLINE):
        while True:
            chunk = await process.stderr.receive_some()
            assert chunk, f"server exited early: {lines!r}"
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            lines += [line.decode() for line in complete]
            for line in lines:
                if "Running on http://127.0.0.1:" in line or "Running on https://127.0.0.1:" in line:
                    return process, int(line.rsplit(":", 1)[1].split()[0]), lines


async def drain_stderr(process: trio.Process) -> None:
    assert process.stderr is not None
    while chunk := await process.stderr.receive_some():
        if os.environ.get("SHOW_SERVER_LOG"):
            sys.stderr.write(chunk.decode(errors="replace"))


async def stop_process(process: trio.Process) -> None:
    """Kill ``process`` if it still runs, wait for it, and close its pipes."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.kill()
        await process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                await stream.aclose()


async def hold_reading_clients(port: int, count: int, codes: list[int], ready: trio.Event) -> None:
    """``count`` clients that echo once, then read until the server closes; collect the close codes.

    ``ready`` is set once all of them have had their echo.
    """

    async def one(i: int) -> None:
        async with open_client(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send_message(f"hello {i}")
            assert await ws.get_message() == f"hello {i}"
            opened.append(i)
            if len(opened) == count:
                ready.set()
            try:
                await ws.get_message()
            except ConnectionClosed as closed:
                codes.append(closed.reason.code)
            else:
                raise AssertionError("expected the server to close the connection")

    opened: list[int] = []
    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)


def router_with_an_echo() -> Router:
    """A router whose ``/echo`` route echoes text (tests add their own routes to it)."""
    app = Router()

    @app.websocket("/echo")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            await ws.send_text(text)

    return app
