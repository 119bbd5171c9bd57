"""Listen addresses: parse, validate, bind, and match against inherited sockets.

One syntax everywhere (``listen()``, ``fdstore.listen()``, ``sdactivate run --listen``,
``gen-units --listen``), modelled on systemd.socket(5) ``ListenStream=``:

=========================  ==============================================
``8080`` / ``:8080``       TCP on every address, dual-stack (``[::]:8080``, v6only off),
                           as systemd reads a bare port with ``BindIPv6Only=default``
``127.0.0.1:8080``         TCP on IPv4
``[::1]:8080``             TCP on IPv6 (``[fe80::1%eth0]:80`` with a scope)
``/run/app.sock``          AF_UNIX stream socket at a path
``@app``                   AF_UNIX stream socket in the abstract namespace
``udp:127.0.0.1:53``       a datagram socket (prefixes: ``tcp:``, ``udp:``, ``unix:``,
                           ``unix-dgram:``, ``unix-seqpacket:``)
=========================  ==============================================
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import stat
from dataclasses import dataclass
from typing import Literal

from ._notify_wire import UNIX_PATH_MAX
from .errors import AddressError

__all__ = ["Kind", "ListenAddress", "address_of", "parse_address"]

Kind = Literal["tcp", "udp", "unix", "unix-dgram", "unix-seqpacket"]
_KINDS: tuple[Kind, ...] = ("tcp", "udp", "unix", "unix-dgram", "unix-seqpacket")
DEFAULT_BACKLOG = 4096  # capped by net.core.somaxconn; systemd 252's Backlog= default is 128


@dataclass(frozen=True)
class ListenAddress:
    """A validated listen address. Build it with :func:`parse_address`."""

    kind: Kind
    host: str | None = None  # IP literal without brackets; None = every address (dual-stack)
    port: int | None = None
    path: str | None = None  # filesystem path, or "@name" for the abstract namespace
    scope: str | None = None  # IPv6 zone ("eth0") for link-local addresses

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise AddressError(f"unknown socket kind {self.kind!r} (one of {', '.join(_KINDS)})")
        if self.is_unix:
            if self.path is None or self.host is not None or self.port is not None:
                raise AddressError(f"{self.kind} address needs a path, got {self!r}")
            _check_unix_path(self.path)
        else:
            if self.path is not None or self.port is None:
                raise AddressError(f"{self.kind} address needs a port, got {self!r}")
            if not 0 <= self.port <= 65535:  # 0: the kernel picks (binding only)
                raise AddressError(port_range_message(self.port, fixed=False))
            if self.host is not None:
                try:
                    ipaddress.ip_address(self.host)
                except ValueError as exc:
                    raise AddressError(
                        f"host {self.host!r} is not an IP address (systemd binds literals only)"
                    ) from exc
            if self.scope is not None and (self.host is None or ":" not in self.host):
                raise AddressError(f"a scope ({self.scope!r}) needs an IPv6 host, got {self!r}")

    # --- derived facts -------------------------------------------------------------------
    @property
    def is_unix(self) -> bool:
        return self.kind.startswith("unix")

    @property
    def is_abstract(self) -> bool:
        return self.path is not None and self.path.startswith("@")

    @property
    def family(self) -> socket.AddressFamily:
        if self.is_unix:
            return socket.AF_UNIX
        if self.host is None or ":" in self.host:
            return socket.AF_INET6
        return socket.AF_INET

    @property
    def type(self) -> socket.SocketKind:
        if self.kind in ("udp", "unix-dgram"):
            return socket.SOCK_DGRAM
        if self.kind == "unix-seqpacket":
            return socket.SOCK_SEQPACKET
        return socket.SOCK_STREAM

    @property
    def sockaddr(self) -> str | bytes | tuple[str, int] | tuple[str, int, int, int]:
        """The address in the form ``socket.bind()`` takes."""
        if self.path is not None:
            return b"\0" + self.path[1:].encode() if self.is_abstract else self.path
        assert self.port is not None
        if self.family == socket.AF_INET:
            assert self.host is not None
            return (self.host, self.port)
        host = "::" if self.host is None else self.host
        scope_id = socket.if_nametoindex(self.scope) if self.scope else 0
        return (host, self.port, 0, scope_id)

    def systemd_listen(self) -> tuple[str, str]:
        """The systemd.socket(5) directive and raw value, e.g. ``("ListenStream", "[::1]:80")``.

        The value is not escaped: only the unit renderer escapes.
        """
        directive = {
            socket.SOCK_STREAM: "ListenStream",
            socket.SOCK_DGRAM: "ListenDatagram",
            socket.SOCK_SEQPACKET: "ListenSequentialPacket",
        }[self.type]
        if self.path is not None:
            return directive, self.path
        if self.host is None:
            return directive, str(self.port)
        return directive, self._host_port()

    def _host_port(self) -> str:
        if self.host is not None and ":" in self.host:
            zone = f"%{self.scope}" if self.scope else ""
            return f"[{self.host}{zone}]:{self.port}"
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        if self.path is not None:
            body = self.path
            return body if self.kind == "unix" else f"{self.kind}:{body}"
        body = str(self.port) if self.host is None else self._host_port()
        return body if self.kind == "tcp" else f"{self.kind}:{body}"

    # --- I/O -----------------------------------------------------------------------------
    def bind(self, *, backlog: int = DEFAULT_BACKLOG, reuse_port: bool = False) -> socket.socket:
        """Create, bind and (for stream/seqpacket) listen. The socket is close-on-exec.

        Raises ``OSError`` from the kernel (``EADDRINUSE``...). A stale unix socket file
        (nobody accepting on it) is replaced, as systemd does.
        """
        sock = socket.socket(self.family, self.type)
        try:
            if not self.is_unix:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if self.family == socket.AF_INET6 and self.host is None:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            elif not self.is_abstract:
                assert self.path is not None
                _remove_stale_unix_socket(self.path, self.type)
            sock.bind(self.sockaddr)
            if self.type != socket.SOCK_DGRAM:
                sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    def matches(self, sock: socket.socket) -> bool:
        """True if ``sock`` is bound to this address with the same family and type."""
        try:
            if sock.type != self.type:
                return False
            if self.is_unix:
                if sock.family != socket.AF_UNIX:
                    return False
                name = sock.getsockname()
                if isinstance(name, bytes):  # abstract
                    return self.is_abstract and name == self.sockaddr
                if not name:  # unnamed (socketpair): abspath("") would be the cwd
                    return False
                return not self.is_abstract and os.path.abspath(name) == os.path.abspath(
                    self.path or ""
                )
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return False
            host, port = sock.getsockname()[:2]
            if port != self.port:
                return False
            if self.host is None:
                return host in ("::", "0.0.0.0")
            return bool(ipaddress.ip_address(host.split("%")[0]) == ipaddress.ip_address(self.host))
        except OSError:
            return False


def port_range_message(port: object, *, fixed: bool) -> str:
    """The one wording of a port out of range: ``fixed`` for a port something else binds
    and clients must know (a socket unit: 1..65535), else 0..65535 (0: the kernel picks)."""
    if fixed:
        return f"port {port!r}: not a port number 1..65535"
    return f"port {port!r}: not a port number 0..65535 (0: the kernel picks a free one)"


def parse_address(
    text: str, *, kind: Kind | None = None, fixed_port: bool = False
) -> ListenAddress:
    """Parse a listen address (see the module docstring). ``kind`` overrides the default;
    ``fixed_port`` refuses port 0 (for units: systemd.socket(5) binds the port as given).

    Raises :class:`AddressError` with the offending text.
    """
    if not isinstance(text, str) or not text or text != text.strip():
        raise AddressError(f"invalid listen address {text!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise AddressError(f"control character in listen address {text!r}")
    body = text
    for prefix in sorted(_KINDS, key=len, reverse=True):
        if text.startswith(prefix + ":"):
            kind, body = prefix, text[len(prefix) + 1 :]
            break
    if body.startswith(("/", "@")):
        # A tcp/udp kind on a path means "stream"/"datagram": listen("/run/x", kind="udp").
        unix_kind: Kind = kind if kind is not None else "unix"
        if not unix_kind.startswith("unix"):
            unix_kind = "unix-dgram" if unix_kind == "udp" else "unix"
        return ListenAddress(unix_kind, path=body)
    inet_kind: Kind = kind if kind is not None else "tcp"
    if inet_kind not in ("tcp", "udp"):
        raise AddressError(f"{inet_kind} needs a path (/path or @name), got {text!r}")
    host, scope, port_text = _split_host_port(body, text)
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:  # no superscripts
        raise AddressError(f"invalid port in listen address {text!r}")
    port = int(port_text)
    if fixed_port and not 0 < port <= 65535:
        raise AddressError(port_range_message(port, fixed=True))
    return ListenAddress(inet_kind, host=host, port=port, scope=scope)


def address_of(sock: socket.socket) -> ListenAddress | None:
    """The address ``sock`` is bound to, as :func:`parse_address` would give it: a
    :class:`ListenAddress` that :meth:`~ListenAddress.matches` it.

    ``[::]`` with ``IPV6_V6ONLY`` off (a bare ``ListenStream=8080`` on systemd's default
    ``BindIPv6Only=``, ``sdactivate run --listen 8080``) is the dual-stack ``8080`` (host
    None). None for what has no such address: an unbound or unnamed socket, another family
    or type, an abstract name no address can spell, a closed socket.
    """
    kinds: dict[tuple[int, int], Kind] = {
        (socket.AF_INET, socket.SOCK_STREAM): "tcp",
        (socket.AF_INET6, socket.SOCK_STREAM): "tcp",
        (socket.AF_INET, socket.SOCK_DGRAM): "udp",
        (socket.AF_INET6, socket.SOCK_DGRAM): "udp",
        (socket.AF_UNIX, socket.SOCK_STREAM): "unix",
        (socket.AF_UNIX, socket.SOCK_DGRAM): "unix-dgram",
        (socket.AF_UNIX, socket.SOCK_SEQPACKET): "unix-seqpacket",
    }
    try:
        kind = kinds.get((sock.family, sock.type))
        if kind is None:
            return None
        name = sock.getsockname()
        if sock.family == socket.AF_UNIX:
            if isinstance(name, bytes):  # abstract: b"\0name"
                path = "@" + name[1:].decode()
            elif name:
                path = name
            else:
                return None
            return ListenAddress(kind, path=path)
        host, port = name[:2]
        host, _, scope = host.partition("%")
        if port == 0:
            return None
        if host == "::" and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
            return ListenAddress(kind, port=port)
        if scope:
            return ListenAddress(kind, host=host, port=port, scope=scope)
        return ListenAddress(kind, host=host, port=port)
    except (OSError, UnicodeDecodeError, AddressError):
        return None


def _split_host_port(body: str, text: str) -> tuple[str | None, str | None, str]:
    if body.isdigit():
        return None, None, body
    if body.startswith(":") and body[1:].isdigit():
        return None, None, body[1:]
    if body.startswith("["):
        end = body.find("]")
        if end < 0 or body[end + 1 : end + 2] != ":":
            raise AddressError(f"expected [ipv6]:port, got {text!r}")
        host, port = body[1:end], body[end + 2 :]
        scope = None
        if "%" in host:
            host, scope = host.split("%", 1)
            if not scope:
                raise AddressError(f"empty IPv6 scope in {text!r}")
        if ":" not in host:
            raise AddressError(f"{host!r} in brackets is not an IPv6 address ({text!r})")
        return host, scope, port
    host, sep, port = body.rpartition(":")
    if not sep or ":" in host:
        raise AddressError(f"expected host:port, [ipv6]:port, a port, /path or @name, got {text!r}")
    return host, None, port


def _check_unix_path(path: str) -> None:
    if path.startswith("@"):
        if len(path) < 2:
            raise AddressError("empty abstract socket name '@'")
        limit = UNIX_PATH_MAX - 1
    else:
        if not path.startswith("/"):
            raise AddressError(f"unix socket path must be absolute, got {path!r}")
        if "/../" in path + "/" or path.endswith("/.."):
            raise AddressError(f"'..' in unix socket path {path!r}")
        limit = UNIX_PATH_MAX - 1
    if len(path.encode()) > limit:
        raise AddressError(f"unix socket path {path!r} is longer than {limit} bytes")
    if "\0" in path:
        raise AddressError(f"NUL in unix socket path {path!r}")


def _remove_stale_unix_socket(path: str, sock_type: int) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise AddressError(f"{path!r} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, sock_type)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        if exc.errno == errno.EPROTOTYPE:
            raise AddressError(f"{path!r} is a socket of another type") from exc
        raise
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path!r} is in use by a live listener")
