"""What the ``portrait`` commands share: JSON on stdout, the one identifier a lookup takes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

IDENTIFIER_FLAGS = {
    "customer_id": "--customer-id",
    "phone": "--phone",
    "account_no": "--account-no",
    "im_id": "--im-id",
    "email": "--email",
}


def print_json(value: Any, pretty: bool = True) -> None:
    option = orjson.OPT_INDENT_2 if pretty else 0
    sys.stdout.write(orjson.dumps(value, option=option).decode("utf-8") + "\n")
    sys.stdout.flush()


def one_identifier(args: argparse.Namespace, command: str) -> tuple[str, str] | None:
    """The one identifier flag given (kind, value), or None after saying what is wrong."""
    chosen = [(kind, getattr(args, kind)) for kind in IDENTIFIER_FLAGS if getattr(args, kind)]
    if len(chosen) != 1:
        print(
            f"{command}: give exactly one of " + ", ".join(IDENTIFIER_FLAGS.values()),
            file=sys.stderr,
        )
        return None
    return chosen[0]
