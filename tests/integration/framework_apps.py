"""A Starlette app and a FastAPI app with structured WebSocket routes, served by the tests with
``python -m trio_asgi_ws tests.integration.framework_apps:starlette_app`` (or ``:fastapi_app``).

Both keep a broadcast hub in their lifespan.  Handlers report what happened to them (which
``except`` clause ran, that they were cancelled) by publishing on the hub's ``events`` topic, and
``/events`` forwards that topic to an observing client: the tests see inside the server process
through a real WebSocket.  ``/plain-ticker`` is the same send-only handler on the framework's own
``WebSocket``, the control that shows what the integration changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import fastapi
import starlette.exceptions
import starlette.routing
import starlette.websockets
import trio
from fastapi import APIRouter, Depends, FastAPI, Header, Query
from starlette.applications import Starlette
from starlette.routing import Mount

from trio_asgi_ws import WebSocket
from trio_asgi_ws.broadcast import Broadcast, open_broadcast
from trio_asgi_ws.endpoints import WebSocketEndpoint
from trio_asgi_ws.integrations.fastapi import structured
from trio_asgi_ws.integrations.starlette import WebSocketRoute

TICK = 0.02


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    async with open_broadcast("memory://") as hub:
        yield {"hub": hub}


async def report(hub: Broadcast, **event: Any) -> None:
    """Publish ``event`` on ``events``, shielded: handlers report from cancelled blocks."""
    with trio.CancelScope(shield=True):
        await hub.publish("events", event)


async def observe(websocket: WebSocket) -> None:
    """``/events``: forward the ``events`` topic; "ready" once subscribed."""
    await websocket.accept()
    async with trio.open_nursery() as nursery:
        await nursery.start(websocket.state.hub.forward, "events", websocket)
        await websocket.send_text("ready")
        async for _ in websocket.iter_text():
            pass
        nursery.cancel_scope.cancel()


async def ticker(websocket: WebSocket) -> None:
    """Send only, never receive; report how the handler ended."""
    hub: Broadcast = websocket.state.hub
    await websocket.accept()
    started = trio.current_time()
    try:
        while True:
            await websocket.send_text("tick")
            await trio.sleep(TICK)
    except BaseException as error:
        await report(hub, route="ticker", ended=type(error).__name__, ran=trio.current_time() - started)
        raise


def _name(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__name__}"


async def catches(websocket: WebSocket) -> None:
    """An echo ported from Starlette: it catches Starlette's WebSocketDisconnect."""
    hub: Broadcast = websocket.state.hub
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(text)
    except starlette.websockets.WebSocketDisconnect:
        await report(hub, route="catches", clause="except starlette WebSocketDisconnect")
    except BaseException as error:
        await report(hub, route="catches", clause=f"passing through: {_name(error)}")
        raise
    finally:
        await report(hub, route="catches", clause="finally")


async def refuse(websocket: WebSocket) -> None:
    """Raise Starlette's ``WebSocketException``, before or after accepting."""
    if websocket.path_params["when"] == "after":
        await websocket.accept()
    raise starlette.exceptions.WebSocketException(code=4001, reason="refused by the app")


async def fails(websocket: WebSocket) -> None:
    await websocket.accept()
    raise ValueError("the endpoint failed on purpose")


async def describe(websocket: WebSocket) -> None:
    """Say what the handler got, then echo."""
    await websocket.accept()
    cls, params = type(websocket), websocket.path_params
    await websocket.send_json(
        {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "path_params": {key: [value, type(value).__name__] for key, value in params.items()},
            "query": dict(websocket.query_params),
            "hub": type(websocket.state.hub).__name__,
        }
    )
    async for text in websocket.iter_text():
        await websocket.send_text(text)


class Shout(WebSocketEndpoint):
    encoding = "text"

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send_text(str(data).upper())


async def plain_ticker(websocket: starlette.websockets.WebSocket) -> None:
    """The control: ``ticker`` on the framework's own WebSocket."""
    hub: Broadcast = websocket.state.hub
    await websocket.accept()
    try:
        while True:
            await websocket.send_text("tick")
            await trio.sleep(TICK)
    except BaseException as error:
        await report(hub, route="plain-ticker", ended=type(error).__name__)
        raise


starlette_app = Starlette(
    lifespan=lifespan,
    routes=[
        WebSocketRoute("/events", observe),
        WebSocketRoute("/ticker", ticker),
        WebSocketRoute("/catches", catches),
        WebSocketRoute("/refuse/{when}", refuse),
        WebSocketRoute("/fails", fails),
        WebSocketRoute("/describe/{room}/{seat:int}", describe, name="describe"),
        WebSocketRoute("/shout", Shout),
        WebSocketRoute("/pages-from-anywhere", describe, allowed_origins=["*"]),
        Mount("/mounted", routes=[WebSocketRoute("/describe/{room}/{seat:int}", describe)]),
        starlette.routing.WebSocketRoute("/plain-ticker", plain_ticker),
    ],
)


# -- FastAPI ---------------------------------------------------------------------------------------

fastapi_app = FastAPI(lifespan=lifespan)
teardowns: list[str] = []


async def current_user(token: Annotated[str, Query()]) -> str:
    if token != "secret":
        raise fastapi.WebSocketException(code=1008, reason="bad token")
    return "ann"


async def session(websocket: fastapi.WebSocket) -> AsyncIterator[str]:
    """A dependency with ``yield``: its teardown runs after the structured block has ended."""
    hub: Broadcast = websocket.state.hub
    yield "session-1"
    await report(hub, route="params", event="session teardown")


@fastapi_app.websocket("/params/{item_id}")
@structured
async def params(
    websocket: WebSocket,
    item_id: int,
    q: str,
    x_token: Annotated[str, Header()],
    user: Annotated[str, Depends(current_user)],
    db: Annotated[str, Depends(session)],
) -> None:
    await websocket.accept()
    cls = type(websocket)
    await websocket.send_json(
        {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "item_id": [item_id, type(item_id).__name__],
            "q": q,
            "x_token": x_token,
            "user": user,
            "db": db,
        }
    )
    async for text in websocket.iter_text():
        await websocket.send_text(text)


@fastapi_app.websocket("/events")
@structured
async def fastapi_observe(websocket: WebSocket) -> None:
    await observe(websocket)


@fastapi_app.websocket("/ticker")
@structured(websocket_options={"takeover_delay": 0.05})
async def fastapi_ticker(websocket: WebSocket) -> None:
    await ticker(websocket)


@fastapi_app.websocket("/catches")
@structured
async def fastapi_catches(websocket: WebSocket) -> None:
    hub: Broadcast = websocket.state.hub
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(text)
    except fastapi.WebSocketDisconnect:
        await report(hub, route="catches", clause="except fastapi WebSocketDisconnect")
    except BaseException as error:
        await report(hub, route="catches", clause=f"passing through: {_name(error)}")
        raise
    finally:
        await report(hub, route="catches", clause="finally")


@fastapi_app.websocket("/refuse/{when}")
@structured
async def fastapi_refuse(websocket: WebSocket, when: str) -> None:
    if when == "after":
        await websocket.accept()
    raise fastapi.WebSocketException(code=4001, reason="refused by the app")


async def accepts_first(websocket: fastapi.WebSocket) -> None:
    await websocket.accept()


@fastapi_app.websocket("/accepted-by-dependency", dependencies=[Depends(accepts_first)])
@structured
async def too_late(websocket: WebSocket) -> None:
    await websocket.send_text("never")


@fastapi_app.websocket("/plain-ticker")
async def fastapi_plain_ticker(websocket: fastapi.WebSocket) -> None:
    await plain_ticker(websocket)


included = APIRouter(prefix="/included")


@included.websocket("/describe/{room}/{seat}")
@structured
async def included_describe(websocket: WebSocket, room: str, seat: int) -> None:
    await describe(websocket)


fastapi_app.include_router(included)


class ConnectionManager:
    """The connection manager of FastAPI's WebSocket tutorial, ported by changing one import."""

    def __init__(self) -> None:
        self.active: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        self.active.remove(websocket)

    async def broadcast(self, text: str) -> None:
        for connection in self.active:
            await connection.send_text(text)


manager = ConnectionManager()


@fastapi_app.websocket("/manager/{client}")
@structured
async def managed(websocket: WebSocket, client: str) -> None:
    await manager.connect(websocket)
    try:
        while True:
            text = await websocket.receive_text()
            await manager.broadcast(f"{client}: {text}")
    except fastapi.WebSocketDisconnect:  # never runs: the gone socket stays in the list
        manager.disconnect(websocket)
