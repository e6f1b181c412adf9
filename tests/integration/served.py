"""``async with served(app) as server``: run ``trio_asgi_ws.server.serve`` for one test."""

from __future__ import annotations

from typing import Any

import trio

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
