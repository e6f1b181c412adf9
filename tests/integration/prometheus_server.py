"""A real Prometheus (Debian's ``prometheus`` package) for integration tests.

``async with prometheus_scraping(target_port) as prom:`` starts ``prometheus`` on a free loopback
port with a generated configuration that scrapes ``127.0.0.1:target_port/metrics`` every second,
a fresh TSDB in a temporary directory, and waits until it is ready; ``await prom.query(expr)``
asks its HTTP API (``/api/v1/query``).  The process is killed on the way out.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
import trio

from tests.integration.metrics_scrape import free_port, get
from tests.integration.served import stop_process

STARTUP_DEADLINE = 20.0

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: trio_asgi_ws
    static_configs:
      - targets: ["127.0.0.1:{target_port}"]
"""


class Prometheus:
    def __init__(self, port: int) -> None:
        self.port = port

    async def query(self, expression: str) -> list[dict[str, object]]:
        """The ``result`` of an instant query (``[]`` when no series matches yet)."""
        status, _, body = await get(self.port, f"/api/v1/query?query={quote(expression)}")
        assert status == 200, body
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        result: list[dict[str, object]] = answer["data"]["result"]
        return result

    async def scalar(self, expression: str) -> float | None:
        """The value of a query that gives one series, None while it gives none."""
        result = await self.query(expression)
        if not result:
            return None
        (series,) = result
        return float(series["value"][1])  # type: ignore[index]


@asynccontextmanager
async def prometheus_scraping(target_port: int) -> AsyncIterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (apt-get install prometheus; .ci/run does)")
    with tempfile.TemporaryDirectory(prefix="prometheus-") as directory:
        config = trio.Path(directory, "prometheus.yml")
        await config.write_text(CONFIG.format(target_port=target_port))
        port = free_port()
        process = await trio.lowlevel.open_process(
            [
                binary,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={Path(directory, 'data')}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            with trio.fail_after(STARTUP_DEADLINE):
                while True:
                    assert process.returncode is None, "prometheus exited at start-up"
                    try:
                        if (await get(port, "/-/ready"))[0] == 200:
                            break
                    except OSError:
                        pass
                    await trio.sleep(0.1)
            yield Prometheus(port)
        finally:
            await stop_process(process)
