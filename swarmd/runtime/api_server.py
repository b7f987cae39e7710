"""The daemon's API socket: producers who are not the daemon's user submit, read and cancel.

A Unix stream socket (``api_socket``), mode 0660 and group ``api_group``: who may connect is
who is in that group. Each connection's peer is read once with SO_PEERCRED and every request
it makes is attributed to it (a submitted job's ``submitted_by``, its ledger entry, the log);
the ``[api.allow]`` table (`swarmd.policies.api_access`) decides for which GIDs it may act.
Requests run on the daemon's own open backend, so a submit answers after its commit, as a
direct submit does.

Under systemd the socket comes from ``swarmd.socket`` (socket activation: systemd creates it
with its group and mode, so the daemon needs no supplementary group); otherwise the daemon
binds it itself (in the state directory, the default outside systemd, it is 0600: no other
user can enter that directory, so producers of other users need ``api_socket`` elsewhere).
Bounded: `MAX_CONNECTIONS` connections (one more gets an error reply and is closed), frames
of at most `swarmd.api.protocol.MAX_FRAME` bytes (a longer or unreadable one gets an error
reply and its connection is closed), `MAX_IN_FLIGHT` requests at a time per connection
(reading waits while they run). The operations are in `swarmd.runtime.api_ops`.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import socket
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec
import structlog

from swarmd.api.protocol import HEADER, VERSION, Request, Response, decode_request, error_body, frame, frame_length
from swarmd.config import Settings, resolve_api_socket
from swarmd.errors import ApiProtocolError, BackendUnavailable, ConfigError, StateDirError, SwarmdError
from swarmd.model import ApiRefuseReason
from swarmd.policies.api_access import Peer
from swarmd.runtime.api_ops import ApiOps
from swarmd.telemetry.metrics import Metrics

log = structlog.get_logger("swarmd.api")

#: Most connections served at once.
MAX_CONNECTIONS: Final = 256
#: Most requests of one connection running at once.
MAX_IN_FLIGHT: Final = 16
#: Seconds a stop waits for running requests to answer.
CLOSE_GRACE: Final = 10.0
#: Mode of the socket file: the daemon's user and the group read and write, nobody else.
SOCKET_MODE: Final = 0o660
#: Mode of a socket in the state directory, which only the daemon's user (and root) can enter.
PRIVATE_SOCKET_MODE: Final = 0o600
_PEERCRED: Final = struct.Struct("3i")
#: The first file descriptor systemd passes (sd_listen_fds).
SD_LISTEN_FDS_START: Final = 3


class ApiServer:
    """The listening socket and its connections, for the life of one daemon run."""

    def __init__(
        self,
        path: Path,
        ops: ApiOps,
        metrics: Metrics,
        *,
        group: str | None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self._environ = os.environ if environ is None else environ
        #: Mode the socket file is given (when the daemon binds it itself).
        self.mode = SOCKET_MODE
        #: True when systemd made the socket (swarmd.socket) and handed it over: it owns the file.
        self.activated = False
        self._ops = ops
        self._metrics = metrics
        self._group = group
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._closing = False
        self._names: dict[int, tuple[str | None, frozenset[str]]] = {}

    @classmethod
    def for_settings(
        cls, settings: Settings, state_dir: Path, ops: ApiOps, metrics: Metrics, environ: dict[str, str] | None = None
    ) -> ApiServer:
        path = resolve_api_socket(settings, state_dir, environ)
        server = cls(path, ops, metrics, group=settings.api_group, environ=environ)
        if path.parent.resolve() == state_dir.resolve():
            # In the state directory (0700) no other user can reach it: keep it the daemon's
            # alone (0600, like every file there) rather than pretend the group may connect.
            server.mode, server._group = PRIVATE_SOCKET_MODE, None
        return server

    async def start(self) -> None:
        """Serve the socket systemd passed (socket activation), else bind one (0660, group
        ``api_group``); ConfigError for a missing group, StateDirError for a path in use or
        not usable."""
        if self._ops.restricts_users and not sees_real_uids():
            raise ConfigError(
                "api.allow",
                "this daemon runs in a private user namespace (systemd PrivateUsers=yes), where every "
                "producer's uid reads as 65534: an allow table by user cannot tell them apart; set "
                "PrivateUsers=no in a drop-in, or remove the table (the socket's group still decides who connects)",
            )
        if not sees_real_uids():
            log.warning("api_peers_unmapped", reason="private user namespace: every producer reads as uid 65534")
        inherited = inherited_socket(self._environ)
        if inherited is not None:
            self.activated = True
            self.path = Path(inherited.getsockname() or self.path)
            self._server = await asyncio.start_unix_server(self._accept, sock=inherited)
            log.info("api_listening", socket=str(self.path), activated=True)
            return
        gid = self._group_id()
        self._clear_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))  # the daemon's umask (0077) makes it 0600 until chmod below
            if gid is not None:
                os.chown(self.path, -1, gid)
            os.chmod(self.path, self.mode)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(self._accept, sock=sock, backlog=128)
        except OSError as exc:
            sock.close()
            raise StateDirError(str(self.path), f"cannot serve the API socket: {exc.strerror or exc}") from None
        log.info("api_listening", socket=str(self.path), group=self._group, mode=oct(self.mode))

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """Stop accepting; let the requests running now answer (a submit committing gets its
        reply), for at most ``grace`` seconds; end every connection; remove the socket file."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        connections = dict(self._connections)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(connection.idle.wait() for connection in connections.values()))
        for task in connections:
            task.cancel()
        if connections:
            await asyncio.gather(*connections, return_exceptions=True)
        if self.activated:
            return  # systemd's file: it stays for the next start
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()

    def _group_id(self) -> int | None:
        if self._group is None:
            return None
        try:
            return grp.getgrnam(self._group).gr_gid
        except KeyError:
            raise ConfigError(
                "api_group",
                f"group {self._group!r} does not exist: create it (groupadd --system {self._group}) "
                "and add the producers' users to it",
            ) from None

    def _clear_stale(self) -> None:
        """Remove a socket file a dead daemon left; refuse one a live daemon answers on, or a
        path that is not a socket."""
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise StateDirError(str(self.path), "exists and is not a socket: remove it or set api_socket elsewhere")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # nobody listens: a dead daemon's leftover
            return
        finally:
            probe.close()
        raise StateDirError(str(self.path), "another daemon serves this API socket: set api_socket elsewhere")

    # -- connections -----------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            await self._reply_and_close(writer, 0, BackendUnavailable("the daemon is stopping"))
            return
        if len(self._connections) >= MAX_CONNECTIONS:
            self._metrics.refuse_api(ApiRefuseReason.TOO_MANY_CONNECTIONS)
            await self._reply_and_close(
                writer, 0, ApiProtocolError("connection", f"the daemon already serves {MAX_CONNECTIONS} connections")
            )
            return
        connection = self._connections[task] = _Connection()
        try:
            peer = await self._peer(writer)
            await self._serve(peer, connection, reader, writer)
        finally:
            del self._connections[task]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _peer(self, writer: asyncio.StreamWriter) -> Peer:
        sock: socket.socket = writer.get_extra_info("socket")
        pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        names = self._names.get(uid)
        if names is None:  # the user database may be remote (NSS): off the loop, once per uid
            names = await asyncio.to_thread(_names_of, uid, gid)
            if len(self._names) < 4096:
                self._names[uid] = names
        return Peer(uid=uid, gid=gid, pid=pid, user=names[0], groups=names[1])

    async def _serve(
        self, peer: Peer, connection: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Read requests and answer each in a task of its own, at most MAX_IN_FLIGHT at a time."""
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        async with asyncio.TaskGroup() as requests:
            while True:
                try:
                    header = await reader.readexactly(HEADER.size)
                    body = await reader.readexactly(frame_length(header))
                    request = decode_request(body)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the client hung up
                except ApiProtocolError as exc:
                    self._metrics.refuse_api(ApiRefuseReason.MALFORMED)
                    log.warning("api_malformed", peer=peer.label(), field=exc.field, reason=exc.reason)
                    await self._reply_and_close(writer, 0, exc)
                    return
                if self._closing:
                    await self._reply_and_close(writer, request.id, BackendUnavailable("the daemon is stopping"))
                    return
                await slots.acquire()
                connection.started()
                requests.create_task(self._answer(peer, request, writer, slots, connection))

    async def _answer(
        self,
        peer: Peer,
        request: Request,
        writer: asyncio.StreamWriter,
        slots: asyncio.Semaphore,
        connection: _Connection,
    ) -> None:
        request_id = request.id
        try:
            result = await self._ops.run(peer, request)
            response = Response(VERSION, request_id, True, result=msgspec.Raw(result))
        except ApiProtocolError as exc:
            self._metrics.refuse_api(ApiRefuseReason.MALFORMED)
            response = Response(VERSION, request_id, False, error=error_body(exc))
        except SwarmdError as exc:
            response = Response(VERSION, request_id, False, error=error_body(exc))
        except Exception as exc:  # a bug of swarmd's: the producer gets an error, the daemon keeps serving
            log.exception("api_internal_error", peer=peer.label(), op=request.op.value)
            response = Response(VERSION, request_id, False, error=error_body(exc))
        finally:
            slots.release()
            connection.finished()
        try:
            data = frame(response)
        except ApiProtocolError as exc:  # a result over the frame limit: say so instead
            data = frame(Response(VERSION, request_id, False, error=error_body(exc)))
        with contextlib.suppress(ConnectionError):  # a client that left does not get its answer
            writer.write(data)
            await writer.drain()

    async def _reply_and_close(self, writer: asyncio.StreamWriter, request_id: int, exc: Exception) -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(frame(Response(VERSION, request_id, False, error=error_body(exc))))
            await writer.drain()
        writer.close()


class _Connection:
    """How many requests of one connection are running (a stop waits for them to answer)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def started(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()


def sees_real_uids(uid_map: Path = Path("/proc/self/uid_map")) -> bool:
    """Whether this process sees other users' real uids (not in a private user namespace that
    maps them all to the overflow uid)."""
    try:
        lines = uid_map.read_text().split("\n")
    except OSError:
        return True
    ranges = [line.split() for line in lines if line.strip()]
    return sum(int(fields[2]) for fields in ranges if len(fields) == 3) >= 2**31


def inherited_socket(environ: Mapping[str, str]) -> socket.socket | None:
    """The listening Unix socket systemd passed this process (``LISTEN_FDS``, fd 3), if any."""
    if environ.get("LISTEN_PID") != str(os.getpid()) or not environ.get("LISTEN_FDS", "").isdigit():
        return None
    if int(environ["LISTEN_FDS"]) < 1:
        return None
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise StateDirError(f"fd {SD_LISTEN_FDS_START}", "the socket systemd passed is not a Unix stream socket")
    sock.setblocking(False)
    return sock


def _names_of(uid: int, gid: int) -> tuple[str | None, frozenset[str]]:
    """A uid's user name and the names of its groups (primary ``gid`` and supplementary)."""
    try:
        user: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = None
    gids = set(os.getgrouplist(user, gid)) if user is not None else {gid}
    names: set[str] = set()
    for number in gids:
        with contextlib.suppress(KeyError):
            names.add(grp.getgrgid(number).gr_name)
    return user, frozenset(names)
