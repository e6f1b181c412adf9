"""The server under test, as ``attacks.py`` and ``soak.py`` run it: a subprocess on 127.0.0.1.

Each script picks a free port from its own range, starts ``python ... --port P`` in a session of
its own (so that SIGKILL to its process group takes any workers with it), reads its stderr until
EOF (an unread pipe would block its logging), waits for it to say it is up and kills the whole
process group afterwards, whatever happened.  ``probe_target`` says which checkout and which
versions the server imports, for the report's header; ``still_serves`` whether a new client is
still served at the end.  The importing script puts the checkout on ``sys.path`` first (for
``tests.integration.attacks``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.integration.attacks import OP_TEXT, frame, handshake


def port_picker(ports: range) -> Callable[[], int]:
    """A ``free_port()`` that hands out the next port of ``ports`` that can be bound now."""
    remaining = iter(ports)

    def free_port() -> int:
        """The next port of the range that can be bound now (each call gets a fresh one)."""
        for port in remaining:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        raise RuntimeError(f"no free port left in {ports[0]}-{ports[-1]}")

    return free_port


async def open_server(
    command: Sequence[str], *, cwd: Path, pythonpath: str, env: Mapping[str, str] | None = None
) -> trio.Process:
    """Start ``command`` in a session of its own, ``pythonpath`` ahead of ours, stderr piped.

    ``env`` is applied last, over ``PYTHONPATH`` too.
    """
    previous = os.environ.get("PYTHONPATH")
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([pythonpath, *([previous] if previous else [])]),
        **(env or {}),
    }
    return await trio.lowlevel.open_process(
        list(command),
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def signal_group(pid: int, signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` to the process group led by ``pid`` (nothing if it is gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


async def kill_group(process: trio.Process) -> None:
    """SIGKILL the whole process group (workers included) and reap ``process`` (5 s at most)."""
    signal_group(process.pid)
    with trio.move_on_after(5):
        await process.wait()


async def drain_lines(
    stream: trio.abc.ReceiveStream, show_log: bool, take: Callable[[list[str]], None]
) -> None:
    """Read ``stream`` until EOF, handing each batch of complete lines to ``take``.

    With ``show_log`` it is copied to our stderr as it comes.
    """
    pending = b""
    with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
        while chunk := await stream.receive_some():
            if show_log:
                sys.stderr.write(chunk.decode(errors="replace"))
            pending += chunk
            *complete, pending = pending.split(b"\n")
            if complete:
                take([line.decode(errors="replace") for line in complete])


@asynccontextmanager
async def supervised(
    process: trio.Process,
    drain: Callable[[], Awaitable[None]],
    ready: Callable[[], Awaitable[object]],
    deadline: float,
) -> AsyncIterator[None]:
    """Run ``drain`` beside the body; enter once ``ready()`` returned (within ``deadline`` s).

    On the way out, however it goes, the process group is killed, the server reaped and its
    stderr closed.
    """
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            try:
                with trio.fail_after(deadline):
                    await ready()
                yield
            finally:
                with trio.CancelScope(shield=True):
                    await kill_group(process)
                    nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await kill_group(process)
            if process.stderr is not None:
                await process.stderr.aclose()


async def still_serves(
    port: int, path: str, *, expect: bytes, served: str, describe: Callable[[BaseException], str]
) -> str:
    """Whether a new client at ``path`` gets a text message containing ``expect`` within 5 s.

    It sends "still there?" first; ``served`` is the answer when it works, ``describe`` names the
    error when the client fails.
    """
    try:
        with trio.fail_after(5):
            conn = await handshake(port, path)
            async with conn:
                await conn.send(frame(OP_TEXT, b"still there?"))
                while True:
                    received = await conn.receive_frame(within=None)
                    if received is None:
                        return "a new client was dropped"
                    if received.opcode == OP_TEXT and expect in received.payload:
                        return served
    except Exception as error:
        return f"a new client failed: {describe(error)}"


def probe_target(python: str, cwd: Path, pythonpath: str) -> tuple[str, str]:
    """The checkout's ``git describe`` (or "?") and what ``python`` imports there, on one line each."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    probe = (
        "import importlib.metadata as m, trio_asgi_ws;"
        "print(trio_asgi_ws.__file__, 'hypercorn', m.version('hypercorn'), 'wsproto', m.version('wsproto'))"
    )
    imported = subprocess.run(
        [python, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, timeout=30
    )
    commit = subprocess.run(
        ["git", "-C", str(cwd), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return commit.stdout.strip() or "?", imported.stdout.strip() or imported.stderr.strip()
