"""``portrait bench --replay``: the replay engine against a plain consume → produce loop.

Both read the same channel events (the throughput benchmark's) from their own copy of the
topic on the embedded stack, in this process, one after the other: the plain loop
consumes, produces one small record per event and waits for the broker's confirmation;
the replay rebuilds the profiles into a fresh Redis namespace through the shared
pipeline. The ratio is replay events/s over plain-loop events/s.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from cli.bench import _fill, _plain_loop, _settings_for, bench_events
from cli.stack import LocalStack, on_free_ports
from portrait.config import Settings
from streams.replay import replay_parallel


def run_replay_bench(base: Settings, events: int, customers: int, as_json: bool) -> int:
    """Plain loop and replay on the same events; prints both rates and the ratio."""
    base = on_free_ports(base)
    stack = LocalStack(base)
    payload = bench_events(events, customers)
    try:
        stack.up()
        plain_settings = _settings_for(base, "replay-plain")
        _fill(plain_settings, plain_settings.topic("channel-events"), payload)
        plain = _plain_loop(
            plain_settings,
            plain_settings.topic("channel-events"),
            plain_settings.topic("profile-changes"),
            events,
        )
        source = _settings_for(base, "replay")
        _fill(source, source.topic("channel-events"), payload)
        summaries = {}
        for processes in (1, 2):
            target = source.model_copy(
                update={"redis_key_prefix": f"{source.redis_key_prefix}r{processes}:"}
            )
            summaries[processes] = replay_parallel(source, target, processes, idle_seconds=3.0)
    finally:
        stack.down()
    result: dict[str, Any] = {
        "events": events,
        "plain_events_per_second": round(plain.rate, 1),
    }
    for processes, summary in summaries.items():
        result[f"replay_{processes}p_events_per_second"] = round(summary.rate, 1)
        result[f"replay_{processes}p_vs_plain"] = (
            round(summary.rate / plain.rate, 3) if plain.rate else 0.0
        )
        result[f"replay_{processes}p_customers"] = summary.customers
    if as_json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"{events} channel events, {customers} customers")
        print(f"  plain consume → produce, 1 process  {plain.rate:10.0f} events/s")
        for processes, summary in summaries.items():
            print(
                f"  portrait replay, {processes} process{'es' if processes > 1 else '  '}   "
                f"{summary.rate:10.0f} events/s  ({summary.rate / plain.rate:.3f}x plain; "
                f"{summary.customers} customers rebuilt)"
            )
    ok = all(s.events == events and s.customers > 0 for s in summaries.values())
    if not ok:
        print("replay did not see every event", file=sys.stderr)
    return 0 if ok else 1
