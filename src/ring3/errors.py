"""ring3's small error tree: the peer's faults (with the status to answer) apart from ours."""

from __future__ import annotations


class Ring3Error(Exception):
    """Base of ring3's own errors."""


class RemoteProtocolError(Ring3Error):
    """The peer broke the protocol; `status` is what to answer before closing."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class LocalProtocolError(Ring3Error):
    """ring3 itself (or an application) tried to send something invalid."""


class ResponseAborted(Ring3Error):
    """A handler gives up on a response it has started: the connection is closed without one."""


class ClientDisconnected(OSError):
    """The client went away; raised to an application that still reads or sends."""
