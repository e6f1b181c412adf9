"""``python -m trio_asgi_ws module:app``: serve an ASGI app with hypercorn's trio worker.

With ``--workers N`` the parent binds the socket once and runs N worker processes sharing it;
with ``--reload`` it restarts them when a ``.py`` file under the current directory changes.
Either way SIGINT/SIGTERM reach every worker, each closes its WebSockets with 1001, and the
command exits 0 once they have all stopped.

``--metrics-port PORT`` serves Prometheus metrics on ``http://HOST:PORT/metrics`` (the
``metrics`` extra; with ``--workers`` the supervisor serves the sum over its workers).  Each
WebSocket leaves one INFO line at its end on the ``trio_asgi_ws.connections`` logger (the
connection log); ``--no-connection-log`` turns it off, as does ``--log-level WARNING``.

If the app's lifespan startup fails, nothing is served: the failure is logged on one ERROR
record (its first line names the error, the app's traceback follows) and the command exits with
status 3 (``STARTUP_FAILURE``, as uvicorn does); with ``--workers`` the supervisor then stops the
other workers and exits with it.

An app module that cannot be imported (it does not exist, or its own import fails: the error is
named with the file and line where it happened) and an address that cannot be listened on (a
port already in use) are one ERROR line each and exit status 1 (``CANNOT_START``).
"""

from __future__ import annotations

import argparse
import builtins
import errno
import importlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
import textwrap
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from ._groups import leaves
from ._supervisor import supervise
from .server import TERMINATION_SIGNALS, StartupFailed, build_config, serve

__all__ = ["CANNOT_START", "STARTUP_FAILURE", "AppImportError", "load_app", "main"]

STARTUP_FAILURE = 3
"""Exit status when the app's lifespan startup failed."""

CANNOT_START = 1
"""Exit status when the app module cannot be imported or the address cannot be listened on."""

_BINDING_FRAMES = frozenset({"bind", "_bind", "create_sockets", "_create_sockets", "open_tcp_listeners"})
"""Functions through which a listening socket is bound: hypercorn's, trio's, the supervisor's."""


class AppImportError(ImportError):
    """The app module named on the command line could not be imported; ``str()`` is one line saying
    why: the module does not exist, or its own import failed (the error, with its file and line)."""


def _operational(summary: str) -> bool:
    """Whether a startup failure's last line names an ``OSError`` (``ConnectionError: cannot reach
    Redis ...``): the environment, not the code, so its one line says all and a traceback would
    only bury it.  Any other error keeps its traceback."""
    name = summary.partition(":")[0].strip()
    error = getattr(builtins, name, None)
    return isinstance(error, type) and issubclass(error, OSError)


def load_app(target: str) -> Any:
    """Import ``module:attribute`` (the attribute may be dotted) relative to the current directory.

    Raises ``ValueError`` for a malformed target or a missing attribute, ``AppImportError``
    (chained from the original error) when the module does not exist or its import fails.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected 'module:attribute', got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app: Any = importlib.import_module(module_name)
    except Exception as error:
        raise AppImportError(_import_failure(module_name, error)) from error
    for name in attribute.split("."):
        try:
            app = getattr(app, name)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return app


def _import_failure(module_name: str, error: Exception) -> str:
    """One line for ``error`` raised by importing ``module_name``."""
    prefix = f"cannot import app module {module_name!r}"
    parts = module_name.split(".")
    packages = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    if isinstance(error, ModuleNotFoundError) and error.name in packages:
        return f"{prefix}: no module named {error.name!r} in {os.getcwd()} or on sys.path"
    if isinstance(error, SyntaxError):  # the failing line is in the error, not in its traceback
        message = error.msg
        where: tuple[str | None, int | None] = (error.filename, error.lineno)
    else:
        message = str(error)
        # The innermost frame that is not the import machinery's is where the failure happened.
        frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith("<")]
        where = (frames[-1].filename, frames[-1].lineno) if frames else (None, None)
    text = f"{prefix}: {type(error).__name__}: {message}" if message else f"{prefix}: {type(error).__name__}"
    filename, line = where
    if filename is not None:
        text += f" ({_shown_path(filename)}, line {line})"
    return text


def _shown_path(filename: str) -> str:
    """``filename`` relative to the current directory when it is under it."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    return filename if relative.startswith("..") else relative


def _listen_failure(error: BaseException) -> OSError | None:
    """The ``OSError`` of a failed bind inside ``error`` (possibly nested in exception groups)."""
    for leaf in leaves(error):
        names = {frame.name for frame in traceback.extract_tb(leaf.__traceback__)}
        if isinstance(leaf, OSError) and names & _BINDING_FRAMES:
            return leaf
    return None


def _listen_failure_line(error: OSError, host: str, port: int, metrics_port: int | None) -> str:
    """One line for a failed bind: which address, and why in plain words."""
    names = {frame.name for frame in traceback.extract_tb(error.__traceback__)}
    if "serve_metrics" in names and metrics_port is not None:
        port, what = metrics_port, " (--metrics-port)"
    else:
        what = ""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if error.errno == errno.EADDRINUSE:
        reason = "address already in use"
    elif error.strerror:
        reason = error.strerror[:1].lower() + error.strerror[1:]
    else:
        reason = str(error)
    return f"cannot listen on {address}{what}: {reason}"


def _plain(text: str) -> str:
    """reST inline literals as plain text (``--help`` is read in a terminal)."""
    return re.sub(r"``(.+?)``", r"\1", text)


def _help_text() -> tuple[str, str]:
    """``--help``'s description and epilog: the module docstring in plain text, rewrapped."""
    paragraphs = [" ".join(p.split()) for p in _plain(__doc__ or "").split("\n\n") if p.strip()]
    width = min(shutil.get_terminal_size().columns, 100) - 2
    epilog = "\n\n".join(textwrap.fill(p, width, break_on_hyphens=False) for p in paragraphs[1:])
    return "Serve an ASGI app (module:attribute) with hypercorn's trio worker.", epilog


async def _parent_gone(parent: int) -> None:
    """Return once the supervising process has died (a worker is then re-parented)."""
    while os.getppid() == parent:  # noqa: ASYNC110 - no event exists for a parent's death
        await trio.sleep(0.5)


def _handle_termination_signals(handler: Callable[[int, Any], None] | int) -> None:
    """In a worker, make SIGINT/SIGTERM harmless whenever ``serve()`` is not handling them.

    The supervisor starts workers with these signals blocked, so one sent during start-up waits
    for ``serve()``'s handlers.  Once ``serve()`` returns, its handlers give way to these, so a
    second signal (Ctrl-C reaches the worker, and the supervisor forwards SIGTERM too) arriving
    while the worker exits cannot kill it with a non-zero status.  Before ``serve()`` a blocked
    signal must stay pending, which it does under a function handler but not under ``SIG_IGN``;
    ``SIG_IGN`` after it, because Python resets function handlers to the default while it
    finalizes.
    """
    for signum in TERMINATION_SIGNALS:
        signal.signal(signum, handler)


def _already_stopping(signum: int, frame: object) -> None:
    logging.getLogger("trio_asgi_ws").debug("%s while not serving: ignored", signal.Signals(signum).name)


def _parser() -> argparse.ArgumentParser:
    description, epilog = _help_text()
    parser = argparse.ArgumentParser(
        prog="python -m trio_asgi_ws",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app", help="the ASGI app to serve, as module:attribute (e.g. examples.chat:app)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--reload", action="store_true", help="restart when a .py file changes")
    parser.add_argument("--max-message-size", type=int, default=1024 * 1024, help="bytes (default 1 MiB)")
    parser.add_argument("--ping-interval", type=float, default=20.0, help="seconds between pings; 0: none")
    parser.add_argument("--read-timeout", type=int, default=60, help="drop silent peers after; 0: never")
    parser.add_argument(
        "--send-timeout",
        type=float,
        default=10.0,
        help="drop a client whose sends make no progress for this long; 0: never (default 10)",
    )
    parser.add_argument(
        "--compression",
        choices=["none", "deflate"],
        default="none",
        help="negotiate permessage-deflate with clients that offer it (default none)",
    )
    parser.add_argument(
        "--graceful-timeout", type=float, default=10.0, help="seconds handlers get on shutdown"
    )
    parser.add_argument("--certfile", help="serve TLS (wss://) with this PEM certificate chain")
    parser.add_argument("--keyfile", help="the PEM private key for --certfile")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port of --host, at /metrics (needs the metrics extra)",
    )
    parser.add_argument(
        "--no-connection-log",
        action="store_true",
        help="no INFO line per WebSocket on the trio_asgi_ws.connections logger",
    )
    parser.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)  # set by the supervisor
    parser.add_argument("--metrics-fd", type=int, default=None, help=argparse.SUPPRESS)  # likewise
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    try:
        app = load_app(args.app)
    except AppImportError as error:
        logging.getLogger("trio_asgi_ws").error("%s", error)
        return CANNOT_START
    except ValueError as error:
        parser.error(str(error))
    options = {
        "max_message_size": args.max_message_size,
        "ping_interval": args.ping_interval or None,
        "read_timeout": args.read_timeout or None,
        "send_timeout": args.send_timeout or None,
        "compression": None if args.compression == "none" else args.compression,
        "graceful_timeout": args.graceful_timeout,
    }
    if (args.certfile is None) != (args.keyfile is None):
        parser.error("--certfile and --keyfile go together")
    if args.certfile is not None:
        options.update(certfile=args.certfile, keyfile=args.keyfile)
    try:
        build_config(args.host, args.port, **options)
    except ValueError as error:
        parser.error(str(error))
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            parser.error(f"--metrics-port must be a port number, got {args.metrics_port}")
        try:
            import prometheus_client  # noqa: F401
        except ModuleNotFoundError:
            parser.error("--metrics-port needs prometheus-client: pip install 'trio_asgi_ws[metrics]'")
    options["connection_log"] = not args.no_connection_log
    if args.fd is not None:  # a worker: serve on the socket the supervisor bound, while it lives
        options["sockets"] = socket.socket(fileno=args.fd)
        if args.metrics_fd is not None:  # the supervisor serves the metrics, asking us for ours
            options["metrics_socket"] = socket.socket(fileno=args.metrics_fd)
        options["shutdown_trigger"] = partial(_parent_gone, os.getppid())
        _handle_termination_signals(_already_stopping)
    elif args.workers > 1 or args.reload:
        worker_argv = [arg for arg in (argv if argv is not None else sys.argv[1:]) if arg != "--reload"]
        try:
            return trio.run(
                partial(
                    supervise,
                    worker_argv,
                    args.host,
                    args.port,
                    args.workers,
                    args.reload,
                    metrics_port=args.metrics_port,
                )
            )
        except (OSError, BaseExceptionGroup) as error:
            return _report_listen_failure(error, args)
    else:
        options["metrics_port"] = args.metrics_port
    try:
        trio.run(lambda: serve(app, args.host, args.port, **options))
    except (OSError, BaseExceptionGroup) as error:
        return _report_listen_failure(error, args)
    except StartupFailed as failure:
        details = "" if _operational(failure.summary) else failure.message.rstrip()
        logging.getLogger("trio_asgi_ws").error(
            "Lifespan startup failed, not serving (exit status %d): %s%s",
            STARTUP_FAILURE,
            failure.summary,
            "\n" + details if details.strip() else "",
        )
        return STARTUP_FAILURE
    finally:
        if args.fd is not None:
            _handle_termination_signals(signal.SIG_IGN)
    return 0


def _report_listen_failure(error: BaseException, args: argparse.Namespace) -> int:
    """Log a failed bind inside ``error`` on one line and return ``CANNOT_START``; re-raise
    ``error`` if it is something else."""
    failure = _listen_failure(error)
    if failure is None:
        raise error
    line = _listen_failure_line(failure, args.host, args.port, args.metrics_port)
    logging.getLogger("trio_asgi_ws").error("%s", line)
    return CANNOT_START


if __name__ == "__main__":
    sys.exit(main())
