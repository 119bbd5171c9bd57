"""Which inherited socket is the one for an address: the one rule, and what :func:`listen`
says when none fits.

:func:`pick_inherited` is used by :func:`sdactivate.listen`, :func:`sdactivate.fdstore.listen`,
the Upgrader's ``listen()`` and ``sdactivate run --listen``; each wraps its error in its own
type. A socket *fits* an address when it is bound to it with the same family and type; port 0
(the kernel picks) fits any port of the same kind and host, because the socket a port-0
request bound in an earlier generation or run has the port the kernel gave it.

For :func:`sdactivate.listen`, when sockets were passed but none fits, that is a mismatch
between the app and its unit (``gen-units myapp --port 80`` passes one socket named
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

__all__ = ["fits", "pick_inherited", "pick_passed"]


def fits(addr: ListenAddress, sock: socket.socket) -> bool:
    """True if ``sock`` is bound to ``addr`` (:meth:`ListenAddress.matches`); port 0 fits
    any port of the same family, type and host."""
    if addr.port != 0:
        return addr.matches(sock)
    from dataclasses import replace

    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        port = sock.getsockname()[1]
    except OSError:
        return False
    return port != 0 and replace(addr, port=port).matches(sock)


def pick_inherited(
    candidates: Sequence[tuple[socket.socket, str]],
    addr: ListenAddress,
    name: str | None,
    *,
    name_decides: bool,
) -> int | None:
    """The index in ``candidates`` ((socket, fd name) in fd order) of the socket for
    ``addr``/``name``, or None when none fits.

    1. The first socket named ``name`` that fits ``addr``.
    2. With ``name_decides`` (the sockets come from units, and the unit decides where to
       listen): the one socket named ``name``, whatever its address; it must have the
       address's type. Raises :class:`ActivationError` when it has not, and when several
       have the name and none fits.
    3. The first socket that fits ``addr``, whatever its name; but a port-0 address with a
       ``name`` takes only a socket of that name (step 1): which port the kernel gave says
       nothing about which of the other sockets it would be.
    """
    named = [] if name is None else [i for i, (_, n) in enumerate(candidates) if n == name]
    for i in named:
        if fits(addr, candidates[i][0]):
            return i
    if name_decides and len(named) == 1:
        sock = candidates[named[0]][0]
        if sock.type != addr.type:
            raise ActivationError(
                f"fd {sock.fileno()} named {name!r} is {sock.type.name}, but"
                f" {str(addr)!r} needs {addr.type.name}"
            )
        return named[0]
    if name_decides and named:
        raise ActivationError(
            f"{len(named)} passed sockets are named {name!r} and none is bound to {str(addr)!r}"
        )
    if addr.port == 0 and name is not None:
        return None
    return next((i for i, (sock, _) in enumerate(candidates) if fits(addr, sock)), None)


def pick_passed(
    rows: Sequence[tuple[int, str, FdKind]],
    sockets: Mapping[int, socket.socket],
    addr: ListenAddress,
    name: str | None,
) -> socket.socket | None:
    """:func:`sdactivate.listen`'s pick: the passed socket for ``addr``/``name``
    (:func:`pick_inherited`, the name deciding); None when no socket was passed at all.

    ``rows`` are the passed fds as (fd, name, kind) in fd order, ``sockets`` the socket
    objects by fd. Raises :class:`ActivationError` when the named fd is not a socket, as
    :func:`pick_inherited` does, and when sockets were passed but none fits.
    """
    if name is not None:
        for fd, fd_name, kind in rows:
            if fd_name == name and kind != "socket":
                raise ActivationError(f"fd {fd} named {name!r} is a {kind}, not a socket")
    candidates = [(sockets[fd], fd_name) for fd, fd_name, kind in rows if kind == "socket"]
    index = pick_inherited(candidates, addr, name, name_decides=True)
    if index is not None:
        return candidates[index][0]
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
