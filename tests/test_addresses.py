"""sdactivate.addresses: parsing, validation, binding and matching of listen addresses."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdactivate.addresses import ListenAddress, address_of, parse_address
from sdactivate.errors import AddressError

GOOD = [
    (
        "8080",
        "tcp",
        None,
        8080,
        None,
        socket.AF_INET6,
        socket.SOCK_STREAM,
        ("ListenStream", "8080"),
    ),
    (
        ":8080",
        "tcp",
        None,
        8080,
        None,
        socket.AF_INET6,
        socket.SOCK_STREAM,
        ("ListenStream", "8080"),
    ),
    (
        "127.0.0.1:80",
        "tcp",
        "127.0.0.1",
        80,
        None,
        socket.AF_INET,
        socket.SOCK_STREAM,
        ("ListenStream", "127.0.0.1:80"),
    ),
    (
        "[::1]:443",
        "tcp",
        "::1",
        443,
        None,
        socket.AF_INET6,
        socket.SOCK_STREAM,
        ("ListenStream", "[::1]:443"),
    ),
    (
        "udp:127.0.0.1:53",
        "udp",
        "127.0.0.1",
        53,
        None,
        socket.AF_INET,
        socket.SOCK_DGRAM,
        ("ListenDatagram", "127.0.0.1:53"),
    ),
    ("udp:53", "udp", None, 53, None, socket.AF_INET6, socket.SOCK_DGRAM, ("ListenDatagram", "53")),
    (
        "tcp:0.0.0.0:0",
        "tcp",
        "0.0.0.0",
        0,
        None,
        socket.AF_INET,
        socket.SOCK_STREAM,
        ("ListenStream", "0.0.0.0:0"),
    ),
    (
        "/run/app.sock",
        "unix",
        None,
        None,
        "/run/app.sock",
        socket.AF_UNIX,
        socket.SOCK_STREAM,
        ("ListenStream", "/run/app.sock"),
    ),
    (
        "@app",
        "unix",
        None,
        None,
        "@app",
        socket.AF_UNIX,
        socket.SOCK_STREAM,
        ("ListenStream", "@app"),
    ),
    (
        "unix-dgram:/run/log",
        "unix-dgram",
        None,
        None,
        "/run/log",
        socket.AF_UNIX,
        socket.SOCK_DGRAM,
        ("ListenDatagram", "/run/log"),
    ),
    (
        "unix-seqpacket:@q",
        "unix-seqpacket",
        None,
        None,
        "@q",
        socket.AF_UNIX,
        socket.SOCK_SEQPACKET,
        ("ListenSequentialPacket", "@q"),
    ),
    (
        "udp:/run/log",
        "unix-dgram",
        None,
        None,
        "/run/log",
        socket.AF_UNIX,
        socket.SOCK_DGRAM,
        ("ListenDatagram", "/run/log"),
    ),
]


@pytest.mark.parametrize(
    ("text", "kind", "host", "port", "path", "family", "type_", "directive"),
    GOOD,
    ids=[g[0] for g in GOOD],
)
def test_parse_good(
    text: str,
    kind: str,
    host: str | None,
    port: int | None,
    path: str | None,
    family: int,
    type_: int,
    directive: tuple[str, str],
) -> None:
    """Each documented spelling parses to the expected kind, host, port, path and directive."""
    addr = parse_address(text)
    assert (addr.kind, addr.host, addr.port, addr.path) == (kind, host, port, path)
    assert (addr.family, addr.type) == (family, type_)
    assert addr.systemd_listen() == directive
    assert parse_address(str(addr)) == addr


def test_ipv6_scope() -> None:
    """[fe80::1%lo]:80 keeps the zone and resolves it to an interface index for bind()."""
    addr = parse_address("[fe80::1%lo]:80")
    assert (addr.host, addr.scope) == ("fe80::1", "lo")
    assert addr.sockaddr == ("fe80::1", 80, 0, socket.if_nametoindex("lo"))
    assert str(addr) == "[fe80::1%lo]:80"


def test_kind_override() -> None:
    """kind= picks the socket kind for text without a prefix; a unix path follows suit."""
    assert parse_address("127.0.0.1:53", kind="udp").kind == "udp"
    assert parse_address("/run/x", kind="udp").kind == "unix-dgram"
    assert parse_address("/run/x", kind="unix-seqpacket").kind == "unix-seqpacket"


BAD = [
    "",
    " 80",
    "80 ",
    "host:80",
    "localhost:80",
    "127.0.0.1",
    "127.0.0.1:",
    "127.0.0.1:65536",
    "127.0.0.1:-1",
    "127.0.0.1:http",
    "127.000.0.1:80",
    "::1:80",
    "[::1]",
    "[::1]80",
    "[]:80",
    "[1.2.3.4]:80",
    "[fe80::1%]:80",
    "relative.sock",
    "unix:relative",
    "@",
    "/a/../b",
    "/a/..",
    "/tab\there",
    "unix:127.0.0.1:80",
    "unix-dgram:80",
    "/" + "x" * 107,
    "@" + "x" * 107,
    "ftp:1.2.3.4:21",
    "\u00b9",  # superscript one: str.isdigit() but not a port
    "127.0.0.1:\u0661\u0662",  # Arabic-Indic digits: int() would read 12
]


@pytest.mark.parametrize("text", BAD)
def test_parse_bad(text: str) -> None:
    """Invalid addresses raise AddressError (a ValueError) quoting the input."""
    with pytest.raises(AddressError):
        parse_address(text)
    assert issubclass(AddressError, ValueError)


def test_unix_path_length_limit_matches_systemd() -> None:
    """sun_path is 108 bytes and systemd insists on a NUL: 107 bytes fit, also for '@'."""
    assert parse_address("/" + "x" * 106).path == "/" + "x" * 106
    assert parse_address("@" + "x" * 106).path == "@" + "x" * 106


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "tcp", "path": "/x", "port": None},
        {"kind": "unix", "host": "127.0.0.1", "port": 1, "path": None},
        {"kind": "tcp", "port": 70000},
        {"kind": "sctp", "port": 1},
        {"kind": "tcp", "host": "1.2.3.4", "port": 1, "scope": "eth0"},
        {"kind": "tcp", "host": None, "port": 1, "scope": "eth0"},
    ],
    ids=["tcp-with-path", "unix-with-host", "port-range", "unknown-kind", "v4-scope", "any-scope"],
)
def test_direct_construction_validates(fields: dict[str, Any]) -> None:
    """ListenAddress validates itself: an inconsistent value cannot be built."""
    with pytest.raises(AddressError):
        ListenAddress(**fields)


_v4 = st.ip_addresses(v=4).map(str)
_v6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
_port = st.integers(0, 65535).map(str)
_inet = st.one_of(
    _port,
    st.tuples(st.one_of(_v4, _v6), _port).map(":".join),
)
_path = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="/"),
    min_size=1,
    max_size=20,
).filter(lambda s: s not in (".", ".."))
_unix = st.one_of(
    st.lists(_path, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
    _path.map(lambda s: "@" + s),
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        _inet,
        _inet.map(lambda s: "udp:" + s),
        _unix,
        _unix.map(lambda s: "unix-dgram:" + s),
        _unix.map(lambda s: "unix-seqpacket:" + s),
    )
)
def test_round_trip(text: str) -> None:
    """str(parse_address(x)) parses back to the same value; the directive value too."""
    addr = parse_address(text)
    assert parse_address(str(addr)) == addr
    directive, value = addr.systemd_listen()
    prefix = {"ListenDatagram": "udp", "ListenSequentialPacket": "unix-seqpacket"}.get(directive)
    if prefix == "udp" and addr.is_unix:
        prefix = "unix-dgram"
    again = parse_address(value if prefix is None else f"{prefix}:{value}")
    assert again == addr


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_arbitrary_text_only_raises_address_error(text: str) -> None:
    """Any text: a ListenAddress or AddressError, nothing else."""
    try:
        parse_address(text)
    except AddressError:
        pass


# --- bind and matches -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:0",
        "[::1]:0",
        "udp:127.0.0.1:0",
        "udp:[::1]:0",
    ],
)
def test_bind_inet_and_match(text: str) -> None:
    """bind() gives a close-on-exec socket of the right family/type that matches its address."""
    addr = parse_address(text)
    sock = addr.bind()
    try:
        assert (sock.family, sock.type) == (addr.family, addr.type)
        assert not os.get_inheritable(sock.fileno())
        host, port = sock.getsockname()[:2]
        bound = parse_address(
            f"{addr.kind}:[{host}]:{port}" if ":" in host else f"{addr.kind}:{host}:{port}"
        )
        assert bound.matches(sock)
        assert not addr.matches(sock)  # port 0 is not the port the kernel chose
        assert not parse_address(
            f"{addr.kind}:{host}:{port + 1}"
            if ":" not in host
            else f"{addr.kind}:[{host}]:{port + 1}"
        ).matches(sock)
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        assert listening == (addr.type == socket.SOCK_STREAM)
    finally:
        sock.close()


def test_bare_port_is_dual_stack() -> None:
    """A bare port binds [::] with IPV6_V6ONLY off, reachable over IPv4 too."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sock = parse_address(str(port)).bind()
    try:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        assert parse_address(str(port)).matches(sock)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        sock.close()


@pytest.mark.parametrize("kind", ["unix", "unix-dgram", "unix-seqpacket"])
def test_bind_unix_path_and_match(kind: str, tmp_path: Path) -> None:
    """Unix path sockets of each type bind, match their path, not another or the wrong type."""
    addr = parse_address(f"{kind}:{tmp_path / 's'}")
    sock = addr.bind()
    try:
        assert sock.type == addr.type
        assert addr.matches(sock)
        assert not parse_address(f"{kind}:{tmp_path / 'other'}").matches(sock)
        other_kind = "unix-dgram" if kind != "unix-dgram" else "unix"
        assert not parse_address(f"{other_kind}:{tmp_path / 's'}").matches(sock)
    finally:
        sock.close()


def test_bind_abstract_and_match() -> None:
    """@name binds in the abstract namespace and matches only that name."""
    name = f"@sdactivate-addr-{os.getpid()}"
    sock = parse_address(name).bind()
    try:
        assert sock.getsockname() == b"\0" + name[1:].encode()
        assert parse_address(name).matches(sock)
        assert not parse_address(name + "x").matches(sock)
        assert not parse_address("/" + name[1:]).matches(sock)
    finally:
        sock.close()


def test_unnamed_socket_matches_no_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unnamed unix socket (socketpair) matches no address, not even the cwd's path."""
    monkeypatch.chdir(tmp_path)
    a, b = socket.socketpair()
    try:
        assert not parse_address(str(tmp_path)).matches(a)
    finally:
        a.close()
        b.close()


def test_matches_never_raises_on_closed_socket() -> None:
    """matches() on a closed socket is False, not an exception."""
    sock = socket.socket()
    sock.close()
    assert parse_address("127.0.0.1:1").matches(sock) is False


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:0",
        "[::1]:0",
        ":0",
        "udp:127.0.0.1:0",
        "udp:0",
        "@sdactivate-addr-of",
        "unix-seqpacket:@sdactivate-seq",
    ],
)
def test_address_of_a_bound_socket_matches_it(text: str) -> None:
    """address_of(sock) is the address that matches the socket (port 0 replaced by the
    kernel's), of the same kind: the inverse of bind()."""
    sock = parse_address(text).bind()
    try:
        got = address_of(sock)
        assert got is not None
        assert got.kind == parse_address(text).kind
        assert got.matches(sock)
        assert got.host == parse_address(text).host  # None stays None: dual-stack
    finally:
        sock.close()


def test_address_of_sockets_with_no_address() -> None:
    """Unbound, unnamed and closed sockets, and a v6-only [::], have no dual-stack address."""
    unbound = socket.socket()
    a, b = socket.socketpair()
    closed = socket.socket()
    closed.close()
    v6only = socket.socket(socket.AF_INET6)
    v6only.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    v6only.bind(("::", 0))
    try:
        assert address_of(unbound) is None
        assert address_of(a) is None
        assert address_of(closed) is None
        got = address_of(v6only)
        assert got is not None and got.host == "::"
    finally:
        for sock in (unbound, a, b, v6only):
            sock.close()


def test_address_of_a_unix_path(tmp_path: Path) -> None:
    """A path socket's address is its path."""
    sock = parse_address(str(tmp_path / "s.sock")).bind()
    try:
        assert address_of(sock) == parse_address(str(tmp_path / "s.sock"))
    finally:
        sock.close()


def test_stale_unix_socket_is_replaced(tmp_path: Path) -> None:
    """A socket file nobody accepts on is replaced, as systemd does."""
    path = tmp_path / "s"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens
    sock = parse_address(str(path)).bind()
    try:
        assert parse_address(str(path)).matches(sock)
    finally:
        sock.close()


def test_live_unix_socket_is_not_stolen(tmp_path: Path) -> None:
    """A path with a live listener: EADDRINUSE, and the listener keeps its file."""
    path = tmp_path / "s"
    live = parse_address(str(path)).bind()
    try:
        with pytest.raises(OSError) as info:
            parse_address(str(path)).bind()
        assert info.value.errno == errno.EADDRINUSE
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
    finally:
        live.close()


def test_non_socket_file_is_not_removed(tmp_path: Path) -> None:
    """A regular file at the path is an AddressError and is left alone."""
    path = tmp_path / "file"
    path.write_text("keep")
    with pytest.raises(AddressError):
        parse_address(str(path)).bind()
    assert path.read_text() == "keep"


def test_socket_of_another_type_at_path(tmp_path: Path) -> None:
    """A live datagram socket at the path of a stream address: AddressError (EPROTOTYPE)."""
    path = tmp_path / "s"
    live = parse_address(f"unix-dgram:{path}").bind()
    try:
        with pytest.raises(AddressError, match="another type"):
            parse_address(str(path)).bind()
    finally:
        live.close()


def test_bind_in_use_port_raises_oserror() -> None:
    """A TCP port in use: OSError(EADDRINUSE) from bind, nothing leaked."""
    first = parse_address("127.0.0.1:0").bind()
    try:
        port = first.getsockname()[1]
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(OSError) as info:
            parse_address(f"127.0.0.1:{port}").bind()
        assert info.value.errno == errno.EADDRINUSE
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        first.close()
