"""Which passed socket :func:`sdactivate.listen` returns, and what it says when none fits.

The rule: the socket named ``name`` wins whatever its address (the unit decides where to
listen), the address picks among several of that name; without a name, or when no socket has
it, a socket bound to the address is taken. When sockets were passed but none fits, that is a
mismatch between the app and its unit (``gen-units myapp --port 80`` passes one socket named
``myapp.socket`` on ``[::]:80``; an app asking for ``127.0.0.1:8080`` by the name ``http``
fits neither), and binding the address instead would fail with ``EADDRINUSE`` over and over
under ``Restart=``, or serve a port nobody connects to. So it is an error that says what was
passed, what was asked for, and how to make them meet.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence

from .addresses import ListenAddress, address_of
from .errors import ActivationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._fdinfo import FdKind

__all__ = ["pick_passed"]


def pick_passed(
    rows: Sequence[tuple[int, str, FdKind]],
    sockets: Mapping[int, socket.socket],
    addr: ListenAddress,
    name: str | None,
) -> socket.socket | None:
    """The passed socket for ``addr``/``name``; None when no socket was passed at all.

    ``rows`` are the passed fds as (fd, name, kind) in fd order, ``sockets`` the socket
    objects by fd. Raises :class:`ActivationError` when the named fd is not a socket or not
    of the address's type, when several share the name and none is bound to ``addr``, and
    when sockets were passed but none has the name or the address.
    """
    if name is not None:
        named = [(fd, kind) for fd, fd_name, kind in rows if fd_name == name]
        for fd, kind in named:
            if kind != "socket":
                raise ActivationError(f"fd {fd} named {name!r} is a {kind}, not a socket")
        socks = [sockets[fd] for fd, _ in named]
        bound_here = [s for s in socks if addr.matches(s)]
        if bound_here:
            return bound_here[0]
        if len(socks) == 1:
            if socks[0].type != addr.type:
                raise ActivationError(
                    f"fd {named[0][0]} named {name!r} is {socks[0].type.name}, but"
                    f" {str(addr)!r} needs {addr.type.name}"
                )
            return socks[0]
        if socks:
            raise ActivationError(
                f"{len(socks)} passed sockets are named {name!r} and none is bound to {str(addr)!r}"
            )
    for sock in sockets.values():
        if addr.matches(sock):
            return sock
    if sockets:
        names = {fd: fd_name for fd, fd_name, _ in rows}
        raise ActivationError(mismatch_message(names, sockets, addr, name))
    return None


def _spelled(addr: ListenAddress) -> str:
    """How to ask listen() for ``addr``: ``:8080`` for every address, else its text."""
    if addr.kind == "tcp" and addr.host is None:
        return f":{addr.port}"
    return str(addr)


def _shown(sock: socket.socket) -> str:
    """The socket's local address as the kernel reports it (``[::]:8080``, ``/run/x.sock``)."""
    addr = address_of(sock)
    if addr is not None and addr.host is None and addr.port is not None:  # dual-stack [::]
        prefix = "" if addr.kind == "tcp" else f"{addr.kind}:"
        return f"{prefix}[::]:{addr.port}"
    if addr is not None:
        return str(addr)
    try:
        return repr(sock.getsockname())
    except OSError:
        return "(closed)"


def mismatch_message(
    names: Mapping[int, str],
    sockets: Mapping[int, socket.socket],
    addr: ListenAddress,
    name: str | None,
) -> str:
    """The error for "sockets were passed, none is the one asked for": what was passed, what
    was asked for, and the fixes on either side (the unit's or the app's)."""
    got = ", ".join(
        f"fd {fd} named {names.get(fd, 'unknown')!r} on {_shown(sock)}"
        for fd, sock in sockets.items()
    )
    wanted = f"listen({_spelled(addr)!r}" + (f", name={name!r})" if name is not None else ")")
    looked = (
        f"a socket named {name!r} or bound to {str(addr)!r}"
        if name is not None
        else f"a socket bound to {str(addr)!r}"
    )
    addresses = [a for a in map(address_of, sockets.values()) if a is not None]
    asks = " or ".join(f"listen({text!r})" for text in dict.fromkeys(map(_spelled, addresses)))
    app_fix = f"ask for a passed address, {asks}" if asks else "ask for a passed fd name"
    if name is not None:
        unit_fix = (
            f"name the socket {name!r}: `gen-units NAME --listen ADDR={name}` or"
            f" `--port PORT --fdname {name}`, FileDescriptorName={name} in the .socket unit,"
            f" `sdactivate run --listen ADDR={name}`"
        )
    else:
        directive, value = addr.systemd_listen()
        unit_fix = (
            f"pass this address: `gen-units NAME --listen {addr}`, {directive}={value} in the"
            f" .socket unit, `sdactivate run --listen {addr}`"
        )
    return (
        f"{wanted}: sockets were passed (LISTEN_FDS) but none is {looked}; got {got}."
        f" Fix the unit ({unit_fix}), or the app: {app_fix}."
        " To listen on an extra address of your own, bind it:"
        " sdactivate.parse_address(ADDR).bind()"
    )
