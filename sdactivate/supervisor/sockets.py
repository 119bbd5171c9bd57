"""The supervisor's sockets: what ``sdactivate run --listen`` hands to every generation.

Sockets passed to the supervisor (``LISTEN_FDS`` from a socket unit or the fd store) come
first where a ``--listen`` asks for them, by :func:`sdactivate._listen_pick.pick_inherited`'s
rule with the address deciding (the command line says where to listen; a stored socket of
that name on another address is not it); the rest is bound here. Inherited sockets nobody
asked for are passed on too, under their names. The socket objects of inherited fds are
:mod:`sdactivate.activation`'s own, one per fd.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..addresses import ListenAddress
from ..errors import SupervisorError
from .runner import Listener

__all__ = ["open_listeners"]


def open_listeners(
    wanted: Sequence[tuple[ListenAddress, str]],
    *,
    environ: Mapping[str, str] | None = None,
    pid: int | None = None,
) -> list[Listener]:
    """A :class:`Listener` per ``(address, fd name)`` in ``wanted``, in that order, then one
    per inherited socket left over. Those bound here have ``store=True`` (``--fdstore``
    pushes them). ``environ``/``pid`` as for :func:`sdactivate.listeners`.

    Raises ``ActivationError`` for a malformed ``LISTEN_*`` environment and
    :class:`SupervisorError` when an address cannot be bound (closing what it bound).
    """
    from .. import activation
    from .._listen_pick import pick_inherited

    inherited = activation.named_sockets(environ=environ, pid=pid)
    out: list[Listener] = []
    try:
        for addr, name in wanted:
            index = pick_inherited(inherited, addr, name, name_decides=False)
            if index is not None:
                sock, _ = inherited.pop(index)
                out.append(Listener(sock, name))
                continue
            try:
                sock = addr.bind()
            except OSError as exc:
                raise SupervisorError(f"cannot bind {str(addr)!r}: {exc.strerror}") from exc
            out.append(Listener(sock, name, store=True))
    except BaseException:
        for lst in out:
            if lst.store:  # ours; inherited fds stay open, as activation keeps them
                lst.sock.close()
        raise
    out.extend(Listener(sock, name) for sock, name in inherited)
    return out
