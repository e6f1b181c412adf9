"""``python -m trio_asgi_ws`` as a user meets it: its help, and one clear line (no traceback) for
the mistakes of a first run: a port already in use, an app module that does not import."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree

import pytest
import trio

from tests.integration.served import REPO, drain_stderr, start_cli, stop_process

DEADLINE = 20.0
"""Bound on one CLI run (it should take well under a second: importing hypercorn and the app)."""


async def run_cli(*args: str, cwd: Path = REPO) -> tuple[int, str]:
    """Run ``python -m trio_asgi_ws ARGS`` to its end; its exit status and its stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with trio.fail_after(DEADLINE):
        result = await trio.run_process(
            [sys.executable, "-m", "trio_asgi_ws", *args],
            cwd=cwd,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout.decode() + result.stderr.decode()


def only_line(output: str) -> str:
    """The one log line of ``output``, without its timestamp."""
    (line,) = output.splitlines()
    return line.split(" ", 2)[2]


async def test_help_is_plain_text_without_rest_markup() -> None:
    status, output = await run_cli("--help")
    assert status == 0
    assert "``" not in output
    assert "Serve an ASGI app (module:attribute) with hypercorn's trio worker." in output
    assert "--metrics-port PORT serves Prometheus metrics on http://HOST:PORT/metrics" in " ".join(
        output.split()
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else already listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_port_in_use_is_one_line_and_exit_status_1(taken_port: int, workers: str) -> None:
    status, output = await run_cli("examples.echo:app", "--port", str(taken_port), "--workers", workers)
    assert status == 1, output
    assert only_line(output) == (
        f"trio_asgi_ws ERROR cannot listen on 127.0.0.1:{taken_port}: address already in use"
    )


async def test_a_metrics_port_in_use_is_named_as_the_metrics_port(taken_port: int) -> None:
    status, output = await run_cli("examples.echo:app", "--port", "0", "--metrics-port", str(taken_port))
    assert status == 1, output
    assert only_line(output) == (
        f"trio_asgi_ws ERROR cannot listen on 127.0.0.1:{taken_port} (--metrics-port): address already in use"
    )


BROKEN_MODULES = {
    "missing_dependency": (
        "import os\n\nimport no_such_dependency_here\n",
        "ModuleNotFoundError: No module named 'no_such_dependency_here' (missing_dependency.py, line 3)",
    ),
    "syntax_error": (
        "app = None\n\ndef handler(:\n    pass\n",
        "SyntaxError: invalid syntax (syntax_error.py, line 3)",
    ),
    "fails_in_a_helper": (
        "from helper_that_fails import thing\n",
        "RuntimeError: no config file (helper_that_fails.py, line 2)",
    ),
}


@pytest.mark.parametrize("module", sorted(BROKEN_MODULES))
async def test_an_app_module_whose_import_fails_is_one_line_with_its_file_and_line(
    tmp_path: Path, module: str
) -> None:
    source, expected = BROKEN_MODULES[module]
    (tmp_path / f"{module}.py").write_text(source)
    (tmp_path / "helper_that_fails.py").write_text("thing = 1\nraise RuntimeError('no config file')\n")
    status, output = await run_cli(f"{module}:app", "--port", "0", cwd=tmp_path)
    assert status == 1, output
    assert only_line(output) == f"trio_asgi_ws ERROR cannot import app module {module!r}: {expected}"


@pytest.mark.parametrize("target", ["no_such_app_module:app", "examples.no_such_example:app"])
async def test_an_app_module_that_does_not_exist_is_named_as_missing(tmp_path: Path, target: str) -> None:
    module = target.partition(":")[0]
    status, output = await run_cli(target, "--port", "0", cwd=tmp_path)
    assert status == 1, output
    assert only_line(output) == (
        f"trio_asgi_ws ERROR cannot import app module {module!r}: "
        f"no module named {module!r} in {tmp_path} or on sys.path"
    )


async def get(port: int, path: str) -> bytes:
    """The body of ``GET path`` (read to its Content-Length: whether the server then closes the
    connection is not what these tests are about)."""
    with trio.fail_after(DEADLINE):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: chat\r\n\r\n".encode())
            response = b""
            while b"\r\n\r\n" not in response:
                response += await stream.receive_some()
            head, _, body = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            (length,) = [
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            while len(body) < length:
                body += await stream.receive_some()
    return body


async def test_the_chat_page_declares_an_inline_icon_so_browsers_do_not_ask_for_favicon_ico() -> None:
    process, port, _ = await start_cli("examples.chat:app", env={"BROADCAST_URL": "memory://"})
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_stderr, process)
            page = await get(port, "/")
            nursery.cancel_scope.cancel()
    finally:
        await stop_process(process)
    head = page.decode().partition("<head>")[2].partition("</head>")[0]
    (link,) = [line for line in head.splitlines() if 'rel="icon"' in line]
    href = link.partition('href="')[2].partition('"')[0]
    assert href.startswith("data:image/svg+xml,")
    icon = ElementTree.fromstring(unquote(href.removeprefix("data:image/svg+xml,")))
    assert icon.tag == "{http://www.w3.org/2000/svg}svg"


def test_a_value_error_raised_by_the_module_is_an_import_failure_not_a_bad_target(tmp_path: Path) -> None:
    """load_app's ValueError means a malformed target (a usage error, exit 2); an error from the
    module's own code is an AppImportError chained from it, whatever its type."""
    from trio_asgi_ws.__main__ import AppImportError, load_app

    (tmp_path / "raises_on_import.py").write_text(
        textwrap.dedent("""\
        x = 1
        raise ValueError("bad setting")
        """)
    )
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(AppImportError) as info:
            load_app("raises_on_import:app")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("raises_on_import", None)
    message = str(info.value)
    assert message.startswith("cannot import app module 'raises_on_import': ValueError: bad setting (")
    assert message.endswith("raises_on_import.py, line 2)")
    assert isinstance(info.value.__cause__, ValueError)
