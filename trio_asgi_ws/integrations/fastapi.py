"""Structured WebSockets in a FastAPI app: ``@structured`` under ``@app.websocket(...)``.

::

    from typing import Annotated
    from fastapi import Depends, FastAPI, Header
    from trio_asgi_ws import WebSocket
    from trio_asgi_ws.integrations.fastapi import structured

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/rooms/{room}")
    @structured
    async def room(websocket: WebSocket, room: str, user: Annotated[User, Depends(current_user)]):
        await websocket.accept()
        ...                                   # cancelled when the client leaves

Why a decorator
---------------
FastAPI finds the parameter to give its ``WebSocket`` by Starlette's class
(``add_non_field_param_to_dependency`` in ``fastapi.dependencies.utils``) and treats every other
parameter as a path, query or header value or a dependency.  Its WebSocket route class is fixed:
``add_api_websocket_route`` always makes an ``APIWebSocketRoute``, and ``include_router`` makes a
new ``APIWebSocketRoute`` from the original route's *endpoint*, so a route subclass would be lost
but the endpoint is kept.  The endpoint is therefore where this integration lives.

``structured(endpoint)`` returns an endpoint whose signature (``__signature__``, which FastAPI
reads through ``inspect.signature``) is the original one with the parameter annotated with
``trio_asgi_ws.WebSocket`` re-annotated with Starlette's ``WebSocket``.  FastAPI analyses and
solves every other parameter as usual (path, query, header, cookie, ``Depends``, dependencies with
``yield``, the route's and router's ``dependencies=[...]``); validation errors are FastAPI's own
(1008, before the endpoint runs).  Called with the solved values, it builds this library's
``WebSocket`` from the raw ASGI callables under FastAPI's ``WebSocket`` (its ``_receive`` and
``_send`` attributes, the one private part of Starlette used here, checked when called) and runs
the original endpoint with it, as ``trio_asgi_ws.integrations.starlette.StructuredEndpoint`` runs
a Starlette one.  Decorator order matters: ``@app.websocket(...)`` goes above ``@structured``.

What the endpoint gets (details in ``trio_asgi_ws.integrations.starlette``):

- the structured block: the client leaving cancels it, even while it only sends;
- ``trio_asgi_ws.WebSocketDisconnect`` on disconnect, which is not ``fastapi.WebSocketDisconnect``
  (Starlette's): an ``except fastapi.WebSocketDisconnect`` clause never runs (docs/frameworks.md);
- ``fastapi.WebSocketException`` closes with its code (before accept: rejects, HTTP 403);
- any other exception closes with 1011, is logged on the ``trio_asgi_ws`` logger and is not
  re-raised into FastAPI;
- a cross-site handshake (``Origin``) is rejected with HTTP 403, after FastAPI has solved the
  dependencies (they run before any endpoint) and before the endpoint runs.

Dependencies run outside the block: they are solved before it opens and those with ``yield``
finish after it has closed the socket, so the client leaving never cancels their teardown.  A
dependency that itself accepts, receives or closes FastAPI's ``WebSocket`` leaves nothing for a
structured endpoint to own: the call raises ``RuntimeError`` before the endpoint runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, overload

from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketState as StarletteWebSocketState

from .._types import Receive, Scope, Send
from ..websockets import WebSocket
from .starlette import StructuredEndpoint

__all__ = ["structured"]

StructuredCall = Callable[..., Coroutine[Any, Any, None]]


@overload
def structured(endpoint: Callable[..., Awaitable[None]], /) -> StructuredCall: ...


@overload
def structured(
    *,
    websocket_options: Mapping[str, Any] | None = None,
    allowed_origins: Sequence[str | None] | None = None,
) -> Callable[[Callable[..., Awaitable[None]]], StructuredCall]: ...


def structured(
    endpoint: Callable[..., Awaitable[None]] | None = None,
    /,
    *,
    websocket_options: Mapping[str, Any] | None = None,
    allowed_origins: Sequence[str | None] | None = None,
) -> StructuredCall | Callable[[Callable[..., Awaitable[None]]], StructuredCall]:
    """Make a FastAPI WebSocket endpoint get this library's structured ``WebSocket``.

    Use it bare (``@structured``) or with options (``@structured(websocket_options={...},
    allowed_origins=[...])``, those of ``trio_asgi_ws.routing``), below ``@app.websocket(...)``.
    The endpoint must have exactly one parameter annotated with ``trio_asgi_ws.WebSocket``, or
    ``TypeError`` is raised here.  See the module docstring for what happens on disconnect,
    cancellation and errors.
    """

    def decorate(endpoint: Callable[..., Awaitable[None]]) -> StructuredCall:
        return _structured(endpoint, websocket_options, allowed_origins)

    if endpoint is None:
        return decorate
    return decorate(endpoint)


def _structured(
    endpoint: Callable[..., Awaitable[None]],
    websocket_options: Mapping[str, Any] | None,
    allowed_origins: Sequence[str | None] | None,
) -> StructuredCall:
    signature, name = _framework_signature(endpoint)
    runner = StructuredEndpoint(
        None,
        name=getattr(endpoint, "__name__", "endpoint"),
        websocket_options=websocket_options,
        allowed_origins=allowed_origins,
    )

    @functools.wraps(endpoint)
    async def entry(**values: Any) -> None:
        scope, receive, send = _raw_asgi(values[name])

        async def call(websocket: WebSocket) -> None:
            await endpoint(**{**values, name: websocket})

        await runner.run(scope, receive, send, call)

    entry.__signature__ = signature  # type: ignore[attr-defined]
    return entry


def _framework_signature(endpoint: Callable[..., Any]) -> tuple[inspect.Signature, str]:
    """``endpoint``'s signature with its ``trio_asgi_ws.WebSocket`` parameter given Starlette's
    class instead (FastAPI then passes its ``WebSocket`` there), and that parameter's name."""
    if not callable(endpoint) or inspect.isclass(endpoint):
        raise TypeError(f"@structured decorates an async function, got {endpoint!r}")
    signature = inspect.signature(endpoint)
    namespace = getattr(inspect.unwrap(endpoint), "__globals__", {})
    names: list[str] = []
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        annotation = _evaluated(parameter.annotation, namespace)
        if inspect.isclass(annotation) and issubclass(annotation, WebSocket):
            names.append(parameter.name)
            parameter = parameter.replace(annotation=StarletteWebSocket)
        parameters.append(parameter)
    if len(names) != 1:
        found = f"{len(names)}: {', '.join(names)}" if names else "none"
        raise TypeError(
            f"@structured needs exactly one parameter of {endpoint.__name__!r} annotated with "
            f"trio_asgi_ws.WebSocket; found {found}"
        )
    return signature.replace(parameters=parameters), names[0]


def _evaluated(annotation: Any, namespace: dict[str, Any]) -> Any:
    """A string annotation (``from __future__ import annotations``) evaluated if it can be."""
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, namespace)
    except Exception:  # a name only imported under TYPE_CHECKING: not ours, leave it to FastAPI
        return annotation


def _raw_asgi(websocket: Any) -> tuple[Scope, Receive, Send]:
    """The scope and raw ASGI callables under FastAPI's (Starlette's) ``WebSocket``."""
    if not isinstance(websocket, StarletteWebSocket):
        raise TypeError(f"expected FastAPI's WebSocket, got {type(websocket).__name__}")
    if (
        websocket.client_state is not StarletteWebSocketState.CONNECTING
        or websocket.application_state is not StarletteWebSocketState.CONNECTING
    ):
        raise RuntimeError(
            "FastAPI's WebSocket was already used (accepted, received from or closed) before the "
            "@structured endpoint ran, by a dependency: a structured endpoint must own the "
            "connection from the handshake on"
        )
    receive, send = getattr(websocket, "_receive", None), getattr(websocket, "_send", None)
    if not callable(receive) or not callable(send):
        raise RuntimeError(
            "this Starlette's WebSocket keeps no _receive/_send: trio_asgi_ws.integrations.fastapi "
            "needs the raw ASGI callables (written against Starlette 1.10)"
        )
    return websocket.scope, receive, send
