"""The parent process behind ``--workers`` and ``--reload``: bind once, run workers, restart them.

Workers are ``python -m trio_asgi_ws ... --fd N`` subprocesses serving the socket bound here.
A termination signal is passed to every worker (each then closes its WebSockets with 1001); a
changed ``.py`` file under the current directory (with ``--reload``) restarts them all.

With ``--metrics-port`` the supervisor serves ``/metrics`` itself, the sum of its workers'
figures, which it asks each of them for at every scrape over a socket pair of its own
(``--metrics-fd``; see ``_worker_metrics``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from pathlib import Path

import trio

from ._worker_metrics import Aggregate, WorkerLink
from .server import TERMINATION_SIGNALS

__all__ = ["supervise"]

logger = logging.getLogger("trio_asgi_ws")

_POLL_SECONDS = 1.0
_SKIPPED_DIRS = {".git", ".venv", "venv", "__pycache__", "node_modules", ".mypy_cache", ".ruff_cache"}


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _source_mtimes(root: Path) -> dict[Path, float]:
    mtimes: dict[Path, float] = {}
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _SKIPPED_DIRS]
        for name in files:
            if name.endswith(".py"):
                path = Path(directory, name)
                try:
                    mtimes[path] = path.stat().st_mtime
                except OSError:
                    continue
    return mtimes


async def _wait_for_change(root: Path) -> None:
    before = _source_mtimes(root)
    while True:
        await trio.sleep(_POLL_SECONDS)
        now = _source_mtimes(root)
        if now != before:
            changed = sorted(
                str(p) for p in set(now) ^ set(before) | {p for p in now if now[p] != before.get(p)}
            )
            logger.info("Reloading: %s changed", ", ".join(changed[:3]))
            return


async def _start_worker(
    command: list[str], sock: socket.socket, aggregate: Aggregate | None
) -> tuple[trio.Process, WorkerLink | None]:
    """Start one worker with SIGINT/SIGTERM blocked; it unblocks them once it handles them.

    With ``aggregate``, the worker gets one end of a new socket pair for its metrics
    (``--metrics-fd``) and the returned link holds the other.

    A signal that arrives while the worker is still starting up (Ctrl-C reaches the whole
    process group, and we forward SIGTERM) then waits for its handlers instead of killing it.
    The mask is set in the child between fork and exec: trio starts processes from a worker
    thread, whose mask the supervisor does not control.
    """
    if aggregate is None:
        process = await trio.lowlevel.open_process(
            command, pass_fds=(sock.fileno(),), preexec_fn=_block_termination_signals
        )
        return process, None
    ours, theirs = socket.socketpair()
    with theirs:
        try:
            process = await trio.lowlevel.open_process(
                [*command, "--metrics-fd", str(theirs.fileno())],
                pass_fds=(sock.fileno(), theirs.fileno()),
                preexec_fn=_block_termination_signals,
            )
        except BaseException:
            ours.close()
            raise
    link = WorkerLink(ours)
    aggregate.links.add(link)
    return process, link


def _block_termination_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATION_SIGNALS)


async def _run_workers(
    command: list[str], sock: socket.socket, workers: int, codes: list[int], aggregate: Aggregate | None
) -> None:
    """Run the workers until one exits; cancelling this, or one exiting, stops them all (SIGTERM).

    Their exit statuses are left in ``codes``; their metrics links are retired from
    ``aggregate`` once they have exited.
    """
    processes: list[tuple[trio.Process, WorkerLink | None]] = []
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                process, link = await _start_worker(command, sock, aggregate)
                processes.append((process, link))

                async def watch(process: trio.Process = process) -> None:
                    await process.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
    finally:
        with trio.CancelScope(shield=True):
            for process, _ in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process, link in processes:
                codes.append(await process.wait())
                if link is not None and aggregate is not None:
                    await aggregate.retire(link)


async def supervise(
    worker_argv: list[str],
    host: str,
    port: int,
    workers: int,
    reload: bool,
    *,
    metrics_port: int | None = None,
) -> int:
    """Serve with ``workers`` processes until SIGINT/SIGTERM; return the exit status.

    ``metrics_port``: serve the workers' summed metrics there (see the module docstring).
    """
    aggregate = Aggregate() if metrics_port is not None else None
    async with trio.open_nursery() as nursery:
        if aggregate is not None:
            from .metrics import serve_metrics  # prometheus_client only when asked for

            await nursery.start(serve_metrics, aggregate.snapshot, host, metrics_port)
        status = await _supervise(worker_argv, host, port, workers, reload, aggregate)
        nursery.cancel_scope.cancel()
    return status


async def _supervise(
    worker_argv: list[str], host: str, port: int, workers: int, reload: bool, aggregate: Aggregate | None
) -> int:
    sock = _bind(host, port)
    command = [
        sys.executable,
        "-m",
        "trio_asgi_ws",
        *worker_argv,
        "--workers",
        "1",
        "--fd",
        str(sock.fileno()),
    ]
    logger.info("Supervising %d worker(s) on %s:%d%s", workers, host, port, " with reload" if reload else "")
    codes: list[int] = []
    with sock, trio.open_signal_receiver(*TERMINATION_SIGNALS) as signals:
        stopping = False
        while not stopping:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal(cancel_scope: trio.CancelScope = nursery.cancel_scope) -> None:
                    nonlocal stopping
                    async for _ in signals:
                        stopping = True
                        cancel_scope.cancel()
                        return

                async def restart_on_change(cancel_scope: trio.CancelScope = nursery.cancel_scope) -> None:
                    await _wait_for_change(Path.cwd())
                    cancel_scope.cancel()

                async def run(cancel_scope: trio.CancelScope = nursery.cancel_scope) -> None:
                    nonlocal stopping
                    codes.clear()
                    await _run_workers(command, sock, workers, codes, aggregate)
                    if reload:  # e.g. a syntax error: wait for the next change, then try again
                        logger.error("Worker exited with %s; waiting for a change to reload", codes)
                        return
                    stopping = True  # a worker ended on its own: stop
                    cancel_scope.cancel()

                nursery.start_soon(stop_on_signal)
                nursery.start_soon(run)
                if reload:
                    nursery.start_soon(restart_on_change)
    return max(codes, key=abs, default=0)
