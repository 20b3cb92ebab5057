"""Errors a person can act on: a service Portrait needs did not answer.

The CLI turns these into one line naming the address and what to do, and a documented
exit code (``cli/main.py``); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

REDIS_UNREACHABLE = 3
"""Exit code of a command that could not reach Redis."""
KAFKA_UNREACHABLE = 4
"""Exit code of a command that could not reach the Kafka broker."""


class ServiceUnreachable(Exception):
    """``service`` did not answer at ``address`` (a URL's password is never kept)."""

    def __init__(self, service: str, address: str) -> None:
        address = without_password(address)
        super().__init__(f"{service} at {address} did not answer")
        self.service = service
        self.address = address

    @property
    def exit_code(self) -> int:
        """The CLI's exit code for this service."""
        return REDIS_UNREACHABLE if self.service == "Redis" else KAFKA_UNREACHABLE

    def hint(self) -> str:
        """One line for a person: what failed, where, and the local way to start it."""
        variable = "PORTRAIT_REDIS_URL" if self.service == "Redis" else "PORTRAIT_KAFKA_BOOTSTRAP"
        return (
            f"cannot reach {self.service} at {self.address} (set by {variable}); "
            "for the local stack run `portrait stack up`"
        )


def without_password(address: str) -> str:
    """A URL with any user and password left out (other addresses as they are)."""
    parts = urlsplit(address)
    if parts.scheme and parts.hostname and (parts.username or parts.password):
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=host))
    return address
