"""What every participant is: ``prepare`` decides (fills the Context, or raises a typed
error to refuse), ``abort`` undoes what its own ``prepare`` did. The transaction manager
(switch/txn.py) calls them."""

from __future__ import annotations

from payswitch.switch.services import Context, Services


class Participant:
    """A step of the authorization path. It is made once per switch with the services
    (never the ``Switch``) and is shared by all requests: per-request state lives in
    the ``Context``.

    ``abort`` is called in reverse order for every participant that was asked to
    prepare when a later one (or the journal write of the answer) failed, and for the
    failing one itself, first: it may have half-done its work (a request sent, no
    answer). So it must look at the Context to see what its prepare got to do."""

    # True: ``check`` does the work without awaiting anything, and the manager calls
    # it directly (no coroutine made and awaited for a lookup or a field check)
    sync = False

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    @property
    def name(self) -> str:
        return type(self).__name__

    async def prepare(self, ctx: Context) -> None:
        if not self.sync:
            raise NotImplementedError
        self.check(ctx)

    def check(self, ctx: Context) -> None:
        """A ``sync`` participant's prepare, as a plain call."""
        raise NotImplementedError

    async def abort(self, ctx: Context) -> None:
        """Nothing to undo by default (a check, a lookup)."""
