"""Routing: WebSocket paths with typed parameters, the lifespan, and what unmatched requests get.

A ``Router`` is an ASGI app.  For a ``websocket`` scope it finds the first ``WebSocketRoute``
whose path matches, fills ``websocket.path_params`` with converted values and runs the endpoint
(in structured mode unless the route opts out).  An unmatched WebSocket is rejected before accept
(HTTP 403 under hypercorn); an HTTP request goes to ``default`` or gets a plain 404.  The
``lifespan`` scope is always answered, since hypercorn's ``serve()`` crashes on apps that ignore it.

Endpoint errors: ``WebSocketException(code, reason)`` closes with that code (before accept it
rejects the handshake); ``InvalidJSON`` (the client sent a frame that is not JSON to
``receive_json``) closes with 1007 and is logged on one line at INFO, without a traceback, since
it is the client's fault; any other exception closes with 1011 after accept or answers HTTP 500
before it, and is logged once, with its traceback, at ERROR on the ``trio_asgi_ws`` logger.
Nothing is re-raised to the server, so it never sees an ``ExceptionGroup`` from us.

Lifespan errors are the exception, as in Starlette: a failing startup or shutdown is sent to the
server as ``lifespan.startup.failed``/``lifespan.shutdown.failed`` with its traceback and then
re-raised, so that whatever runs the lifespan (``serve()``, a test client) reports it and, when
startup failed, does not go on as if the app were ready.

Origins: a browser sends ``Origin`` with every WebSocket handshake, and cookies with it, so a page
on any site could open a socket to this app as its logged-in visitor (cross-site WebSocket
hijacking).  By default the router admits requests without ``Origin`` (not browsers) and
same-origin ones (``Origin`` names the scheme, host and port the request was sent to); others are
rejected before accept with HTTP 403.  ``allowed_origins=[...]`` admits more, ``"*"`` any.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, TypeVar, cast
from urllib.parse import urlsplit

from ._counters import note_rejection
from ._types import ASGIApp, Receive, Scope, Send
from .datastructures import Headers, URLPath, split_root_path
from .endpoints import WebSocketEndpoint
from .websockets import InvalidJSON, WebSocket, WebSocketClose, lifecycle

__all__ = [
    "Convertor",
    "Lifespan",
    "NoMatchFound",
    "OriginPolicy",
    "Router",
    "WebSocketRoute",
]

logger = logging.getLogger("trio_asgi_ws")

_T = TypeVar("_T")
Endpoint = Callable[[WebSocket], Awaitable[None]]
Lifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]
"""A factory taking the app and returning an async context manager; what it yields is state."""


class NoMatchFound(Exception):
    """``url_path_for`` found no route with that name taking exactly those parameters."""

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        listed = ", ".join(params)  # in the order given, as Starlette lists them
        super().__init__(f'No route exists for name "{name}" and params "{listed}".')


class Convertor(Generic[_T]):
    """Turns one path segment into a value and back; ``regex`` says what it matches."""

    def __init__(self, regex: str, convert: Callable[[str], _T], to_string: Callable[[_T], str]) -> None:
        self.regex = regex
        self.convert = convert
        self.to_string = to_string


def _float_to_string(value: float) -> str:
    if value < 0 or value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"float path parameters must be finite and non-negative, got {value!r}")
    return f"{value:0.20f}".rstrip("0").rstrip(".")


def _int_to_string(value: int) -> str:
    if value < 0:
        raise ValueError(f"int path parameters must be non-negative, got {value!r}")
    return str(value)


CONVERTORS: dict[str, Convertor[Any]] = {
    "str": Convertor("[^/]+", str, str),
    "path": Convertor(".*", str, str),
    "int": Convertor("[0-9]+", int, _int_to_string),
    "float": Convertor(r"[0-9]+(?:\.[0-9]+)?", float, _float_to_string),
    "uuid": Convertor(
        "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}",
        uuid.UUID,
        str,
    ),
}

_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?}")


def compile_path(path: str) -> tuple[re.Pattern[str], str, dict[str, Convertor[Any]]]:
    """Compile ``/chat/{room}/{id:int}`` into a regex, a format string and the convertors."""
    if not path.startswith("/"):
        raise ValueError(f"route paths must start with '/', got {path!r}")
    regex, template, convertors = "^", "", {}
    position = 0
    for match in _PARAM.finditer(path):
        name, kind = match.group(1), match.group(2) or "str"
        if kind not in CONVERTORS:
            raise ValueError(f"unknown path convertor {kind!r} in {path!r}; known: {sorted(CONVERTORS)}")
        if name in convertors:
            raise ValueError(f"duplicated path parameter {name!r} in {path!r}")
        literal = path[position : match.start()]
        regex += re.escape(literal) + f"(?P<{name}>{CONVERTORS[kind].regex})"
        template += literal + "{" + name + "}"
        convertors[name] = CONVERTORS[kind]
        position = match.end()
    regex += re.escape(path[position:]) + "$"
    template += path[position:]
    return re.compile(regex), template, convertors


class OriginPolicy:
    """Which ``Origin`` headers may open a WebSocket: the defence against cross-site hijacking.

    Admitted: a request without ``Origin`` (browsers always send one, so this is not a browser,
    and cannot be riding on a visitor's cookies); a same-origin request, whose ``Origin`` is the
    scheme (``http`` for ``ws``, ``https`` for ``wss``), host and port of its own ``Host`` header;
    and the origins in ``allowed`` (``"*"``: any).  Comparison is case-insensitive, with default
    ports made explicit.  ``None`` in the list is accepted and changes nothing (a request without
    ``Origin`` is always admitted).  Behind a proxy that rewrites ``Host``, list the public origin.
    """

    def __init__(self, allowed: Sequence[str | None] = ()) -> None:
        if isinstance(allowed, str):
            raise TypeError("allowed_origins must be a list of origins, not a single string")
        self._any = "*" in allowed
        self._allowed = {_canonical_origin(origin) for origin in allowed if origin not in (None, "*")}

    def allows(self, scope: Scope) -> bool:
        """Whether this WebSocket scope's ``Origin`` is admitted (see the class docstring)."""
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or self._any:
            return True
        canonical = _canonical_origin(origin)
        if canonical in self._allowed:
            return True
        scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
        host = headers.get("host")
        return host is not None and canonical == _canonical_origin(f"{scheme}://{host}")


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _canonical_origin(origin: str) -> str:
    """``scheme://host:port`` in lower case with the port explicit; unparsable input as given."""
    text = origin.strip().lower().rstrip("/")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    if not parts.scheme or not parts.hostname:
        return text
    if port is None:
        port = _DEFAULT_PORTS.get(parts.scheme)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def _is_websocket_function(endpoint: object) -> bool:
    """Tell whether ``endpoint`` is called as ``endpoint(websocket)`` rather than as an ASGI app.

    Functions and methods (also inside ``functools.partial``) are, as in Starlette, whatever
    their signature.  Any other callable (a class, an instance) is an ASGI app, as in Starlette,
    unless its signature takes one argument but could not take ``(scope, receive, send)``: such
    an object was always called with the WebSocket here (Starlette would fail calling it).
    """
    while isinstance(endpoint, functools.partial):
        endpoint = endpoint.func
    if inspect.isfunction(endpoint) or inspect.ismethod(endpoint):
        return True
    try:
        signature = inspect.signature(endpoint)  # type: ignore[arg-type]  # checked callable
    except (TypeError, ValueError):  # no signature to read (some builtins): assume ASGI
        return False
    return _binds(signature, 1) and not _binds(signature, 3)


def _binds(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


class WebSocketRoute:
    """A WebSocket endpoint at a path such as ``/chat/{room}`` or ``/item/{id:int}``.

    ``endpoint`` is one of:

    - ``async def endpoint(websocket)`` (also a method, a ``functools.partial`` of one, or an
      object whose ``__call__`` takes just the WebSocket).  With ``structured=True`` (the
      default) it runs inside ``async with websocket:``;
    - a ``WebSocketEndpoint`` subclass, run the same way;
    - any other callable is an ASGI app (a class such as Starlette's ``WebSocketEndpoint``, an
      instance taking ``scope, receive, send``), as in Starlette.  It is called with the scope and
      the ``receive``/``send`` of a plain-mode ``WebSocket`` (``structured`` does not apply:
      it sees the connection as it would under Starlette), so the socket is still closed when
      it returns and an exception it raises is handled like a function endpoint's.

    Anything else raises ``TypeError``.  A route is itself an ASGI app (as in Starlette): called
    directly it serves a matching WebSocket, rejects any other before accept (HTTP 403 under a
    server), answers HTTP with 404, and answers the lifespan with nothing to run.
    """

    def __init__(
        self,
        path: str,
        endpoint: Endpoint | type[WebSocketEndpoint] | ASGIApp | type[Any],
        *,
        name: str | None = None,
        allowed_origins: Sequence[str | None] | None = None,
        structured: bool = True,
        websocket_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._endpoint_class: type[WebSocketEndpoint] | None = None
        self._endpoint_function: Endpoint | None = None
        self._endpoint_app: ASGIApp | None = None
        if inspect.isclass(endpoint) and issubclass(endpoint, WebSocketEndpoint):
            self._endpoint_class = endpoint
        elif not callable(endpoint):
            raise TypeError(
                f"endpoint must be an async function, a WebSocketEndpoint or an ASGI app, got {endpoint!r}"
            )
        elif _is_websocket_function(endpoint):
            self._endpoint_function = cast(Endpoint, endpoint)
        else:
            self._endpoint_app = cast(ASGIApp, endpoint)
        self.path = path
        self.endpoint = endpoint
        self.name = name if name is not None else getattr(endpoint, "__name__", type(endpoint).__name__)
        self.structured = structured
        self.websocket_options = dict(websocket_options or {})
        self.origins = OriginPolicy(allowed_origins) if allowed_origins is not None else None
        self.path_regex, self.path_format, self.convertors = compile_path(path)

    def match(self, path: str) -> dict[str, Any] | None:
        """The converted path parameters if ``path`` matches this route, else None."""
        found = self.path_regex.match(path)
        if found is None:
            return None
        return {key: self.convertors[key].convert(value) for key, value in found.groupdict().items()}

    def url_path_for(self, name: str, /, **params: Any) -> URLPath:
        """This route's path with ``params`` filled in, made safe to link to (see ``URLPath``).

        Raises ``NoMatchFound`` unless ``name`` is this route's and ``params`` are exactly its
        parameters, and ``ValueError`` for a value its convertor cannot write (a ``/`` outside a
        ``path`` parameter, an empty ``str`` one, a negative number).
        """
        if name != self.name or set(params) != set(self.convertors):
            raise NoMatchFound(name, params)
        segments = {key: self.convertors[key].to_string(value) for key, value in params.items()}
        for key, text in segments.items():
            if "/" in text and self.convertors[key] is not CONVERTORS["path"]:
                raise ValueError(f"path parameter {key!r} may not contain '/', got {text!r}")
            if not text and self.convertors[key] is CONVERTORS["str"]:
                raise ValueError(f"path parameter {key!r} may not be empty")
        return URLPath(self.path_format.format(**segments), protocol="websocket")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve this route alone, as an ASGI app (see the class docstring)."""
        kind = scope["type"]
        if kind == "lifespan":
            await _run_lifespan(_no_lifespan, scope, receive, send, app=scope.get("app", self))
        elif kind != "websocket":
            await _not_found(scope, receive, send)
        else:
            params = self.match(split_root_path(scope)[1] or "/")
            if params is None:
                note_rejection(scope, "no_route")
                await WebSocketClose()(scope, receive, send)
                return
            scope["path_params"] = {**scope.get("path_params", {}), **params}
            await self._admit(self.origins or _SAME_ORIGIN, scope, receive, send)

    async def _admit(self, origins: OriginPolicy, scope: Scope, receive: Receive, send: Send) -> None:
        """Reject a WebSocket from an origin ``origins`` refuses (HTTP 403), else handle it."""
        if not origins.allows(scope):
            path = split_root_path(scope)[1] or "/"
            logger.info("Rejected WebSocket %s from origin %r", path, Headers(scope=scope).get("origin"))
            note_rejection(scope, "origin")
            await WebSocketClose()(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, name={self.name!r})"

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the endpoint on a WebSocket already matched and admitted (no path or origin check).

        A function or ``WebSocketEndpoint`` runs in a structured block unless
        ``structured=False``, so the client leaving cancels it and a full receive buffer closes
        with 1008; an ASGI-app endpoint gets a plain-mode ``WebSocket``'s callables.  The socket
        is closed when the endpoint ends (see "Endpoint errors" in docs/routing.md for the
        codes).  No ``Exception`` it raises reaches the caller: ``InvalidJSON`` is logged at
        INFO, any other error at ERROR with its traceback.
        """
        websocket = WebSocket(scope, receive, send, **self.websocket_options)
        ending = lifecycle(websocket)
        try:
            structured = self.structured and self._endpoint_app is None
            async with websocket if structured else ending.plain_block():
                await self._call_endpoint(websocket)
        except Exception as error:
            if isinstance(error, InvalidJSON):
                logger.info(
                    "Closed WebSocket %s with 1007: the client sent invalid JSON (%s)",
                    scope.get("path"),
                    error,
                )
            elif ending.close_for(error)[0] == 1011:
                logger.error(
                    "Error in WebSocket endpoint %s for %s\n%s",
                    self.name,
                    scope.get("path"),
                    "".join(traceback.format_exception(error)),
                )

    async def _call_endpoint(self, websocket: WebSocket) -> None:
        if self._endpoint_class is not None:
            await self._endpoint_class(websocket.scope, websocket.receive, websocket.send).dispatch(websocket)
        elif self._endpoint_function is not None:
            await self._endpoint_function(websocket)
        elif self._endpoint_app is not None:
            await self._endpoint_app(websocket.scope, websocket.receive, websocket.send)


class Router:
    """An ASGI app routing WebSockets by path, answering the lifespan, and passing HTTP on."""

    def __init__(
        self,
        routes: Sequence[WebSocketRoute] = (),
        *,
        lifespan: Lifespan | None = None,
        default: ASGIApp | None = None,
        allowed_origins: Sequence[str | None] | None = None,
    ) -> None:
        self.routes = list(routes)
        self.lifespan_context: Lifespan = lifespan if lifespan is not None else _no_lifespan
        self.default = default
        self.origins = OriginPolicy(allowed_origins or ())

    def add_websocket_route(
        self, path: str, endpoint: Endpoint | type[WebSocketEndpoint], **options: Any
    ) -> WebSocketRoute:
        """Append a ``WebSocketRoute(path, endpoint, **options)`` and return it.

        ``options`` are the route's (``name``, ``allowed_origins``, ``structured``,
        ``websocket_options``); a bad path or endpoint raises here, not when a request arrives.
        Routes are tried in the order they were added.
        """
        route = WebSocketRoute(path, endpoint, **options)
        self.routes.append(route)
        return route

    def websocket(self, path: str, **options: Any) -> Callable[[_E], _E]:
        """Decorator form: ``@router.websocket("/chat/{room}")`` above ``async def chat(ws)``."""

        def register(endpoint: _E) -> _E:
            self.add_websocket_route(path, endpoint, **options)
            return endpoint

        return register

    def url_path_for(self, name: str, /, **params: Any) -> URLPath:
        """The path of the first route called ``name`` taking ``params``, as a ``URLPath``.

        Raises ``NoMatchFound`` when no route has that name and exactly those parameters.
        """
        for route in self.routes:
            try:
                return route.url_path_for(name, **params)
            except NoMatchFound:
                continue
        raise NoMatchFound(name, params)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI call; ``scope["router"]`` names this router (unless an outer one is
        there already) on the scopes it serves itself, not on HTTP requests passed to ``default``,
        whose own router (a Starlette app's, say) must find itself there for ``url_for``."""
        kind = scope["type"]
        if kind not in ("websocket", "lifespan") and self.default is not None:
            await self.default(scope, receive, send)
            return
        scope.setdefault("router", self)
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await _run_lifespan(self.lifespan_context, scope, receive, send, app=scope.get("app", self))
        else:
            await _not_found(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = split_root_path(scope)[1] or "/"
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            scope["path_params"] = {**scope.get("path_params", {}), **params}
            await route._admit(route.origins or self.origins, scope, receive, send)
            return
        note_rejection(scope, "no_route")
        await WebSocketClose()(scope, receive, send)


_E = TypeVar("_E", bound=Callable[..., Any])


@asynccontextmanager
async def _no_lifespan(app: Any) -> AsyncIterator[None]:
    yield None


_SAME_ORIGIN = OriginPolicy()


async def _run_lifespan(
    context: Lifespan, scope: Scope, receive: Receive, send: Send, *, app: Any = None
) -> None:
    """Answer the ``lifespan`` scope, running ``context(app)`` from startup to shutdown.

    A failure in either phase is sent to the server as ``lifespan.startup.failed`` or
    ``lifespan.shutdown.failed`` with its traceback as the message, and then re-raised, as
    Starlette does: the server (or test client) reports it and, after a failed startup, stops.
    A server that only watched for the message and waited for the app to return (Starlette's
    TestClient) would otherwise carry on as if it had started.
    """
    await receive()  # lifespan.startup
    started = False
    try:
        async with context(app) as state:
            if state:
                if "state" not in scope:
                    raise RuntimeError('The server does not support "state" in the lifespan scope.')
                scope["state"].update(state)
            await send({"type": "lifespan.startup.complete"})
            started = True
            await receive()  # lifespan.shutdown
    except Exception as error:
        kind = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
        await send({"type": kind, "message": "".join(traceback.format_exception(error))})
        raise
    await send({"type": "lifespan.shutdown.complete"})


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    body = b"Not Found"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})
