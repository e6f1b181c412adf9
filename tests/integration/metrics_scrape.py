"""Reading a real server's ``/metrics`` in tests: ``scrape(port)`` and ``wait_for(port, ...)``."""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import DEADLINE

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""``{(sample name, sorted labels): value}``."""


def free_port() -> int:
    """A port nothing listens on now (the OS's choice; the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def get(port: int, path: str = "/metrics", method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to 127.0.0.1:``port``: the status, the headers (lowercased) and the body."""
    with trio.fail_after(DEADLINE):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            request = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            await stream.send_all(request.encode())
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


async def scrape(port: int) -> Samples:
    status, _, body = await get(port)
    assert status == 200, body
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when it is absent (a labelled counter not yet moved)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def wait_for(port: int, condition: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``condition`` holds (a connection's figures land when its socket closes)."""
    with trio.fail_after(DEADLINE):
        while True:
            samples = await scrape(port)
            if condition(samples):
                return samples
            await trio.sleep(0.02)
