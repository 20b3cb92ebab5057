"""The state scripts as Redis sees them: a Functions library where the server has them.

``apply_event.lua`` has a set-up part (the layout tables, about eighty closures, the
decoded options) and a call part, split by the ``--@CALL@`` line. Run as EVALSHA, the
set-up runs on every call: about 50 µs of a standalone Redis's time before any event
(74 µs on a cluster node, where each event is its own call). Loaded as a Functions
library (``FUNCTION LOAD``, Redis ≥ 7.0 and Valkey), the set-up runs once per key prefix
and options on a server, and each ``FCALL`` runs only the call part.

The library's name carries a digest of its text, so workers of two versions sharing a
Redis each call their own. A server without Functions (Redis < 7) gets EVALSHA of the
plain script; a server that lost the library or the script (restart without
persistence, failover) gets it again and the call is repeated once. Both scripts are
idempotent, so a repeat is safe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

CALL_MARK = "--@CALL@"
BUILT_KEPT = 8  # set-ups one server keeps (one per key prefix and options in use)


def as_library(source: str) -> tuple[str, str]:
    """The library text of a script with a call mark, and its one function's name.

    ``build(ARGV)`` runs the set-up with the first call's arguments and returns the call
    part as a function of each call's ``ARGV``; set-ups are kept by (prefix, options),
    ``ARGV[1]`` and ``ARGV[2]``.
    """
    setup, call = source.split(CALL_MARK)
    name = "portrait_" + hashlib.sha1(source.encode()).hexdigest()[:16]
    library = f"""#!lua name={name}
local function build(ARGV)
{setup}
return function(ARGV)
{call}
end
end
local built, count = {{}}, 0
redis.register_function('{name}', function(keys, args)
  local key = args[1] .. '\\n' .. args[2]
  local run = built[key]
  if not run then
    if count >= {BUILT_KEPT} then built, count = {{}}, 0 end
    run = build(args)
    built[key], count = run, count + 1
  end
  return run(args)
end)
"""
    return library, name


def _missing_function(error: ResponseError) -> bool:
    return "function not found" in str(error).lower()


def _no_functions(error: ResponseError) -> bool:
    message = str(error).lower()
    return "unknown command" in message and ("fcall" in message or "function" in message)


class StateScript:
    """One state script on a Redis client (standalone or cluster): :meth:`call` runs it."""

    def __init__(self, source: str, *, functions: bool = True) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.library: str | None = None
        self.name = ""
        if functions and CALL_MARK in source:
            self.library, self.name = as_library(source)

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[bytes | str]) -> None:
        """One call on a pipeline; its answer (or error: a server that lacks the script
        answers one) comes with the pipeline's, and the caller retries it with
        :meth:`call`."""
        if self.library is not None:
            pipe.fcall(self.name, len(keys), *keys, *args)
        else:
            pipe.evalsha(self.sha, len(keys), *keys, *args)

    def missing(self, reply: object) -> bool:
        """Whether a pipelined call's answer says the server lacks the script."""
        if isinstance(reply, NoScriptError):
            return True
        return isinstance(reply, ResponseError) and _missing_function(reply)

    async def load(self, client: Any) -> None:
        """Load the script (every primary, on a cluster client)."""
        if self.library is not None:
            await client.function_load(self.library, replace=True)
        else:
            await client.script_load(self.source)

    async def call(self, client: Any, keys: Sequence[str], args: Sequence[bytes | str]) -> Any:
        """The script's answer to one call; loads it first where the server lacks it."""
        for _attempt in range(3):
            try:
                if self.library is not None:
                    return await client.fcall(self.name, len(keys), *keys, *args)
                return await client.evalsha(self.sha, len(keys), *keys, *args)
            except ResponseError as error:
                if self.library is not None and _no_functions(error):
                    self.library = None  # Redis < 7: the plain script, from now on
                elif self.missing(error):
                    await self.load(client)
                else:
                    raise
        raise NoScriptError("the script vanished twice in a row")
