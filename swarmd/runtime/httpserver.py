"""The daemon's HTTP listener: ``/metrics``, ``/healthz`` and ``/readyz``.

No HTTP parsing of our own: the stdlib ``wsgiref`` server with ``ThreadingMixIn`` runs in a
background thread, exactly as ``prometheus_client.start_http_server`` does, and
``prometheus_client.make_wsgi_app`` serves ``/metrics``::

    server = HttpServer("127.0.0.1", 9464, metrics.registry,
                        health=lambda: (True, ""), ready=lambda: (state.ready, state.why))
    server.start()          # binds now; raises ListenError naming the address
    ...
    server.stop()

``health`` and ``ready`` run on a server thread, not on the event loop: they must only read
values the loop has cached (a bool and a string), never await, lock or do I/O. A callback
that raises answers 503 with the exception's text.

Of swarmd this module imports only its errors (`ListenError` is defined there).
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import Collector

from swarmd.errors import ListenError, error_text

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["HealthCheck", "HttpServer", "ListenError"]

#: A health or readiness check: ``(ok, reason)``; ``reason`` is shown when not ok.
HealthCheck: TypeAlias = Callable[[], tuple[bool, str]]

# Each response gets a fresh header list: wsgiref adds Content-Length to the list it is given.
_TEXT: Final = ("Content-Type", "text/plain; charset=utf-8")


class _SilentHandler(WSGIRequestHandler):
    """Request handler that logs nothing and gives up on a silent client."""

    timeout = 10.0

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


#: Connections the kernel queues before the server accepts them (socketserver's default is 5,
#: which sends a burst of parallel scrapers into 1 s SYN retries).
LISTEN_BACKLOG: Final = 128
#: Connections served at once, one thread each. Past that a new connection is closed at once:
#: idle sockets held open (slowloris) cannot make the daemon start a thread per socket.
MAX_CONNECTIONS: Final = 32


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """Thread-per-request WSGI server whose request threads never block the process exit,
    with a bounded number of them."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # every slot is taken: close, start no thread
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: its slot is free again
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the fully qualified name of the host, which
        # can hang for seconds on a machine without a resolver; the name is not needed.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is not worth a traceback on stderr."""


class HttpServer:
    """``/metrics`` from ``registry``, ``/healthz`` from ``health``, ``/readyz`` from ``ready``.

    ``port`` 0 binds a free port; :attr:`port` tells which after :meth:`start`.
    ``poll_interval`` bounds how long :meth:`stop` waits for the serving thread to notice.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: Collector,
        *,
        health: HealthCheck,
        ready: HealthCheck,
        poll_interval: float = 0.5,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._metrics_app: WSGIApplication = make_wsgi_app(registry)
        self._health = health
        self._ready = ready
        self._poll_interval = poll_interval
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port after :meth:`start`, else the requested one."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """``host:port`` (``[host]:port`` for IPv6) of the listener."""
        return _format_address(self.host, self.port)

    def start(self) -> None:
        """Bind now and serve from a background thread; raises ListenError if binding fails."""
        if self._server is not None:
            raise RuntimeError(f"HttpServer on {self.address} is already started")
        host, port = self.host, self._requested_port
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, _, _, _, sockaddr = infos[0]

            class Server(_Server):
                address_family = family

            server = make_server(str(sockaddr[0]), port, self._app, Server, handler_class=_SilentHandler)
        except OSError as exc:
            raise ListenError(host, port, exc.strerror or str(exc), exc.errno) from exc
        except (OverflowError, UnicodeError) as exc:  # port out of range, bad host name
            raise ListenError(host, port, str(exc)) from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self._poll_interval},
            name=f"swarmd-http-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread; idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- WSGI -----------------------------------------------------------------------------

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "HEAD":
            return self._head(environ, start_response)
        return self._get(environ, start_response)

    def _head(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """HEAD answers as GET would, with the same headers and length, and no body."""
        answer: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
            answer.append((status, headers))
            return lambda _data: None

        body = b"".join(self._get({**environ, "REQUEST_METHOD": "GET"}, capture))
        status, headers = answer[0]
        headers = [header for header in headers if header[0].lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return []

    def _get(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            check = self._health
        elif path == "/readyz":
            check = self._ready
        else:
            start_response("404 Not Found", [_TEXT])
            return [b"not found\n"]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [_TEXT, ("Allow", "GET, HEAD")])
            return [b"method not allowed\n"]
        try:
            ok, reason = check()
        except Exception as exc:  # a broken check is a failed check, not a 500
            ok, reason = False, error_text(exc)
        if ok:
            start_response("200 OK", [_TEXT])
            return [b"ok\n"]
        start_response("503 Service Unavailable", [_TEXT])
        return [(reason.rstrip("\n") or "unavailable").encode() + b"\n"]


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
