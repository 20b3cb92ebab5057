"""``portrait``: the command line for operators and data teams (the commands are in
``cli/run.py``, ``cli/data.py`` and ``cli/read.py``)."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from cli.common import IDENTIFIER_FLAGS
from cli.data import (
    cmd_import,
    cmd_produce,
    cmd_replay,
    cmd_schemas,
    cmd_snapshot,
    cmd_tail,
)
from cli.read import (
    cmd_account,
    cmd_emotion,
    cmd_erase,
    cmd_problems,
    cmd_products,
    cmd_profile,
    cmd_trends,
)
from cli.run import (
    cmd_bench,
    cmd_chaos,
    cmd_demo,
    cmd_publish_profiles,
    cmd_serve,
    cmd_stack,
    cmd_worker,
)
from portrait.config import load_settings
from portrait.errors import ServiceUnreachable


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``portrait`` command."""
    parser = argparse.ArgumentParser(prog="portrait", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="start, stop or show the embedded local Kafka + Redis")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--json", action="store_true")
    stack.set_defaults(func=cmd_stack)

    worker = sub.add_parser("worker", help="run the Faust worker")
    worker.add_argument(
        "--lane",
        choices=["all", "realtime", "bulk"],
        default=None,
        help="the lanes this worker serves (default PORTRAIT_LANE, all): realtime reads "
        "calls and chat, bulk the channel events and commands",
    )
    worker.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes in one consumer group (one per core); HTTP ports count up",
    )
    worker.set_defaults(func=cmd_worker)

    publisher = sub.add_parser(
        "publish-profiles",
        help="publish portrait.profiles from portrait.profile-changes (a worker starts one)",
    )
    publisher.set_defaults(func=cmd_publish_profiles)

    serve = sub.add_parser(
        "serve", help="serve the HTTP API and the agent page alone (read-only; no worker)"
    )
    serve.add_argument("--port", type=int, default=None, help="default PORTRAIT_HTTP_PORT")
    serve.set_defaults(func=cmd_serve)

    produce = sub.add_parser("produce", help="produce events from a JSONL file to their topics")
    produce.add_argument("file")
    produce.add_argument("--topic", help="send every line raw to this topic (short name)")
    produce.set_defaults(func=cmd_produce)

    profile = sub.add_parser("profile", help="look a profile up")
    profile_sub = profile.add_subparsers(dest="profile_action", required=True)
    get = profile_sub.add_parser("get", help="print the profile found by one identifier")
    for kind, flag in IDENTIFIER_FLAGS.items():
        get.add_argument(flag, dest=kind)
    get.add_argument("--json", action="store_true", help="print the profile document as JSON")
    get.set_defaults(func=cmd_profile)

    account = sub.add_parser("account", help="look an account up")
    account_sub = account.add_subparsers(dest="account_action", required=True)
    account_get = account_sub.add_parser("get", help="print an account: people, stats")
    account_get.add_argument("--account-no", required=True)
    account_get.add_argument("--json", action="store_true", help="print the account as JSON")
    account_get.set_defaults(func=cmd_account)

    problems = sub.add_parser(
        "problems", help="a customer's past problems; --like: the 3 most similar to a text"
    )
    for kind, flag in IDENTIFIER_FLAGS.items():
        problems.add_argument(flag, dest=kind)
    problems.add_argument("--like", help="rank by embedding similarity to this text")
    problems.add_argument("--json", action="store_true")
    problems.set_defaults(func=cmd_problems)

    trends = sub.add_parser("trends", help="top keywords and intents of recent time windows")
    trends.add_argument("--window", help="bucket size, e.g. 1h, 6h, 1d (default: the window)")
    trends.add_argument("--last", type=int, default=5, help="how many recent buckets")
    trends.add_argument("--json", action="store_true")
    trends.set_defaults(func=cmd_trends)

    imports = sub.add_parser("import", help="load records from own or third-party sources")
    imports.add_argument("file", help="JSONL or CSV (by extension, or --format)")
    imports.add_argument("--format", choices=["jsonl", "csv"])
    imports.add_argument("--source", default="import", help="source name, e.g. crm, third_party")
    imports.add_argument(
        "--map",
        action="append",
        metavar="COLUMN=TARGET",
        help="rename a column: an identifier kind, attr:<name>, occurred_at or ignore (repeatable)",
    )
    imports.add_argument("--confidence", type=float, help="confidence of the imported values")
    imports.set_defaults(func=cmd_import)

    products = sub.add_parser("products", help="phase × product offers, acceptances, rates")
    products.add_argument("--phase", choices=["opening", "discovery", "proposal", "closing"])
    products.add_argument("--json", action="store_true")
    products.set_defaults(func=cmd_products)

    erase = sub.add_parser("erase", help="request erasure of a customer (right to be forgotten)")
    for kind, flag in IDENTIFIER_FLAGS.items():
        erase.add_argument(flag, dest=kind)
    erase.add_argument("--requested-by", help="who asked (kept in the command, not the profile)")
    erase.set_defaults(func=cmd_erase)

    tail = sub.add_parser("tail", help="print the events of a topic as they arrive")
    tail.add_argument("topic", help="full name or short name (profile-changes, dlq …)")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--json", action="store_true", help="one raw JSON event per line")
    tail.add_argument("--max", type=int, help="stop after this many events")
    tail.add_argument("--idle-timeout", type=float, help="stop after this many idle seconds")
    tail.set_defaults(func=cmd_tail)

    snap = sub.add_parser("snapshot", help="write every live profile in Redis to a JSONL file")
    snap.add_argument("--jsonl", required=True, help="the file to write, one document a line")
    snap.set_defaults(func=cmd_snapshot)

    replay = sub.add_parser("replay", help="rebuild profiles from the input topics")
    replay.add_argument("--namespace", help="fresh Redis key prefix (default replay-<time>:)")
    replay.add_argument("--redis-url", help="Redis (database) to rebuild into (default: live)")
    replay.add_argument("--since", help="replay events from this RFC 3339 time on")
    replay.add_argument("--idle-timeout", type=float, default=3.0, help="stop after idle seconds")
    replay.add_argument(
        "--processes", type=int, default=1, help="engines, each on its share of the partitions"
    )
    replay.add_argument("--verify", action="store_true", help="compare with the live profiles")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=cmd_replay)

    schemas = sub.add_parser("schemas", help="write (or --check) the JSON Schemas")
    schemas.add_argument("--check", action="store_true")
    schemas.set_defaults(func=cmd_schemas)

    emotion = sub.add_parser("emotion", help="emotion of a text, or of every line of a JSONL")
    emotion.add_argument("text", nargs="*", help="the text (words are joined by spaces)")
    emotion.add_argument(
        "--jsonl", help='read lines with "text" (a file, or - for stdin), write them back labelled'
    )
    emotion.add_argument("--json", action="store_true", help="one JSON object for a text")
    emotion.add_argument("--batch", type=int, default=256, help="texts per model call")
    emotion.set_defaults(func=cmd_emotion)

    demo = sub.add_parser("demo", help="run the demo story end to end")
    demo.add_argument("--keep-stack", action="store_true", help="leave the stack running")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="naive Faust vs Portrait vs plain loop, events/s")
    bench.add_argument("--events", type=int, default=100_000)
    bench.add_argument(
        "--customers", type=int, default=None, help="default 10,000 (--api: 2,000 profiles)"
    )
    bench.add_argument("--json", action="store_true")
    bench.add_argument(
        "--emotion", action="store_true", help="emotion model alone vs the worker reading emotion"
    )
    bench.add_argument("--messages", type=int, default=10_000, help="chat messages for --emotion")
    bench.add_argument(
        "--cluster",
        action="store_true",
        help="the same events on standalone Redis and a local 3-master cluster: events/s, "
        "script time per event per shard, each shard's share",
    )
    bench.add_argument(
        "--durability",
        action="store_true",
        help="a worker per PORTRAIT_REDIS_DURABILITY (none, aof, replica): events/s and ratios",
    )
    bench.add_argument(
        "--replay", action="store_true", help="replay engine vs a plain consume → produce loop"
    )
    bench.add_argument(
        "--prompts", action="store_true", help="call segment → agent prompt latency at --rate"
    )
    bench.add_argument(
        "--rate",
        type=int,
        default=None,
        help="--prompts: segments/s (200); --api: requests/s (500)",
    )
    bench.add_argument(
        "--seconds", type=float, default=None, help="how long --prompts (20) or --api (10) sends"
    )
    bench.add_argument(
        "--api",
        action="store_true",
        help="profile look-ups against portrait serve at --rate, and prompt delivery over SSE",
    )
    bench.add_argument(
        "--recovery",
        action="store_true",
        help="two workers, one killed and restarted every --every seconds (--kills times) "
        "while events flow: how long until every partition's outputs resume",
    )
    bench.add_argument("--kills", type=int, default=6, help="--recovery: kills")
    bench.add_argument("--every", type=float, default=25.0, help="--recovery: seconds apart")
    bench.add_argument(
        "--loss",
        type=int,
        default=0,
        metavar="RUNS",
        help="RUNS two-process runs of --events: every output counted by an independent "
        "reader, every missing event traced (on the topic, pending, applied, DLQ)",
    )
    bench.add_argument(
        "--growth",
        action="store_true",
        help="fresh customers against customers with a long history: events/s, Redis µs, bytes",
    )
    bench.add_argument("--history", type=int, default=500, help="events per mature customer")
    bench.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="--cluster, --growth: rounds of both sides (median shown)",
    )
    bench.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="--prompts: channel events produced at once before the segments (and a run "
        "without segments, for the drain rate)",
    )
    bench.add_argument("--chats", type=int, default=2000, help="chat events per --growth run")
    bench.add_argument(
        "--channel-events", type=int, default=3000, help="channel events per --growth run"
    )
    bench.set_defaults(func=cmd_bench)

    chaos = sub.add_parser(
        "chaos",
        help="fault suite: a seeded workload, two workers, faults, compared with an oracle",
    )
    chaos.add_argument("--seed", type=int, default=7)
    chaos.add_argument("--people", type=int, default=300)
    chaos.add_argument("--events-per-person", type=int, default=12)
    chaos.add_argument("--workdir", type=Path, help="keep the logs and AOF here")
    chaos.add_argument("--faults", help="comma-separated, in order (default: all)")
    chaos.add_argument("--short", action="store_true", help="three faults only (make test)")
    chaos.set_defaults(func=cmd_chaos)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``portrait`` console script.

    A service that does not answer is one line on stderr (which address, and how to
    start the local stack) and exit code 3 (Redis) or 4 (Kafka), without a traceback
    unless ``--debug``.
    """
    import redis.exceptions

    from portrait.config import ConfigurationError

    args = build_parser().parse_args(argv)
    settings = load_settings()
    try:
        code: int = args.func(settings, args)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        return _unreachable(ServiceUnreachable("Redis", settings.redis_url), exc, args.debug)
    except redis.exceptions.RedisClusterException as exc:
        if "reachable node" not in str(exc):  # not "no node of the cluster answers"
            raise
        return _unreachable(ServiceUnreachable("Redis", settings.redis_url), exc, args.debug)
    except ServiceUnreachable as exc:
        return _unreachable(exc, exc, args.debug)
    except ConfigurationError as exc:
        print(f"portrait: {exc}", file=sys.stderr)
        return 2
    return code


def _unreachable(error: ServiceUnreachable, cause: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(cause)
    print(f"portrait: {error.hint()}", file=sys.stderr)
    return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
