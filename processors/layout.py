"""The state layout: key names, field prefixes, families, caps and separators.

One source for what Python and the state script (``state/apply_event.lua``) both
read and write. The script gets these values rendered into its source by
:func:`lua_constants` (the line ``--@LAYOUT@``), so the two cannot disagree; a test
checks that every name the script uses comes from here.

A customer's state is a key family hash-tagged by the customer id (``{P}c:{cid}:<key>``):

- ``p`` — the profile hash of bounded fields, the prefix giving the merge operation
  (:data:`COUNT` add integer, :data:`WEIGHT` / :data:`SUM` add float, :data:`ATTRIBUTE`,
  :data:`TAG`, :data:`REGISTER` keep the larger string, :data:`META` min/max/add). Its
  size grows with the variety of the customer's data (channels, employees, attributes,
  products, intents), never with the number of events.
- one sorted set per :class:`Family` — the parts that grow with history: the action
  trail, problems, resolutions, keyword weights and the recent negative messages. Each is
  kept to its cap by rank (O(log n) per event), never by scanning the profile.
- ``seenh:<epoch>`` — processed event ids as 8-byte hashes, one hash per retention
  epoch (``floor(now / retention)``) whose :data:`SEEN_BUCKETS` fields (the hash's first
  byte, hex) hold the ids appended to them, so a check reads one bucket, not every id of
  the epoch; a bucket is written whole, so it keeps no spare room as an appended string
  does. The current and previous epochs are checked, so an id is remembered for one to
  two retention periods at 8 bytes an id. (``seen:<epoch>``, one string of every id, is
  what earlier versions wrote: still read, merged and deleted until it expires.)
- ``ids``, ``pending``, ``merged``, ``redirect``, ``calls``, ``call:<id>`` — identifiers,
  outputs awaiting delivery, merge bookkeeping and call sessions.
- ``accts`` / ``people`` — a person's account numbers / an account's people. An account
  is an entity of its own (:data:`ACCOUNT_ENTITY`), never an identifier of a person.

The script answers with the bounded profile hash plus a *view* of each family: the
members the document can show (newest or heaviest first), as fields with the family's
prefix, so the document builders read one flat map whether it came from an update or a
full load.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# Separators of the state script's answer: records, units, "absent before", and the
# family views (one after another, their members as the sorted sets hold them).
RECORD_SEP, UNIT_SEP, ABSENT = "\x1e", "\x1f", "\x1d"
VIEW_SEP, MEMBER_SEP = "\x1c", "\x1b"
ENTITY_SEP = "\x1a"
"""Between the answers for each account of an account-only event."""

# Field prefixes of the profile hash (and of family views).
COUNT, WEIGHT, SUM, ATTRIBUTE, TAG, REGISTER, META = "c:", "d:", "e:", "a:", "t:", "r:", "m:"

REJECTED = "rej:"
"""Counters ``c:rej:<kind>:<reason>``: identifiers the identity rules rejected."""
ROLE = "r:role:"
"""The register ``r:role:<account no>`` (order TAB role): the person's role on an account."""
FRIEND, GROUP = "friend:", "grp:"
"""Relation registers ``r:friend:<employee>`` and ``r:grp:<employee>:<8-hex group
hash>``, whose value ends in TAB ``added`` while the relation is active."""
MET = "met:"
"""The register ``r:met:<employee>``: the 13-digit epoch ms of the customer's latest call
or chat with that employee (an agent may read the profiles of customers it met lately)."""
AGENT = "agent:"
"""``{P}agent:{<id>}`` — an agent's current customer (``customer_id``, ``ref`` = the call
or conversation id, ``at`` = epoch ms), the latest call or chat wins; expires after the
agent access window."""
ACCOUNT_ENTITY = "acct:"
"""An account's entity id is this prefix and its number: its key family is
``{P}c:{acct:<no>}:<key>``, with the same profile hash, families and processed ids as a
person's (an account has stats, a behaviour trail and indicators of its own)."""

ACCOUNT_SPEND = "a"
"""Buckets of the spend population (``pop:spend``) that count accounts are this prefix
and the bucket (``a12``); a person's bucket is the bare number. Account wealth ranks
among accounts; a person's, whose spend includes the accounts they hold, among both."""

SEEN_HASH_BYTES = 8
"""Bytes of an event id's SHA-1 kept in the processed-id strings."""
SEEN, SEEN_LEGACY = "seenh:", "seen:"
"""Key names (before the epoch) of the processed-id hashes and of earlier versions'
processed-id strings."""
SEEN_BUCKETS = 16
"""Fields of a processed-id hash: an id's bucket is its hash's first byte modulo this (16:
a check reads a sixteenth of the epoch's ids)."""

NEGATIVE_STREAK = "n:streak"
"""The view field holding the number of negative messages since the latest calm one."""


@dataclass(frozen=True, slots=True)
class Family:
    """A part of the profile that grows with history, kept in its own sorted set.

    ``newest`` families keep the lexically largest names (order keys: the latest events)
    whatever the arrival order, members ``name-suffix US value`` with score 0;
    ``heaviest`` families keep the largest weights (member = name suffix, score = minus
    the decayed weight, so rank order is the document's order: heaviest first, ties the
    smaller name first; beyond the cap the lightest go, of equal weights the larger
    name); ``since_calm`` holds order keys newer than the register ``r:calm`` (the
    negative streak).
    ``shown`` is how many members an update's answer carries as the view (0 = all kept);
    families of one ``view`` group are shown together (a resolution changes how the
    problems before it read); a family with ``since`` (another family's prefix) shows
    its members from that family's oldest shown one on.
    """

    prefix: str
    key: str
    keep: str
    kept: int
    shown: int
    view: str = ""
    since: str = ""


ACTIONS = Family("y:", "act", "newest", kept=50, shown=50)
PROBLEMS = Family("r:pb:", "pb", "newest", kept=20, shown=10, view="problems")
RESOLUTIONS = Family("r:rs:", "rs", "newest", kept=20, shown=0, view="problems", since="r:pb:")
KEYWORDS = Family("d:kw:", "kw", "heaviest", kept=100, shown=10)
NEGATIVES = Family("n:", "neg", "since_calm", kept=0, shown=0)

FAMILIES: tuple[Family, ...] = (ACTIONS, PROBLEMS, RESOLUTIONS, KEYWORDS, NEGATIVES)

REDIS_SETTINGS: dict[str, str] = {
    "zset-max-listpack-entries": "64",
    "zset-max-listpack-value": "512",
}
"""The Redis server settings the families are sized for (``portrait stack``, the tests'
servers and ``deploy/compose.yaml`` start Redis with them; a worker on a Redis without
them logs a warning and works all the same, at a higher cost per event). A sorted set
of up to 64 members is a listpack, scanned member by member; a longer one is a
skiplist with a hash index. The keyword family (up to 100 members) takes look-ups and
an increment per keyword of every chat message: as a listpack each ``ZINCRBY`` scanned
and re-parsed up to 100 scores (23 µs a call against 5 µs on a new customer's; paired
harness, 2026-12-03), as a skiplist it is a hash look-up. The action trail (50) and
problems (20) stay listpacks; members of up to 512 bytes keep problems (an order key and
the problem's text, ≈ 160 bytes) a listpack too, which pays for most of the keyword
index's memory (a 500-chat customer 20.9 KB → 25.1 KB; with the defaults, 128 and 64,
the problems were a skiplist of 5.9 KB)."""

CALM = "r:calm"
"""The register of the latest non-negative message's order key."""

ENTITY_KEYS: dict[str, str] = {
    "PROFILE": "p",
    "IDS": "ids",
    "PENDING": "pending",
    "MERGED": "merged",
    "REDIRECT": "redirect",
    "CALLS": "calls",
    "ACCOUNTS": "accts",
    "PEOPLE": "people",
    "ID_HASHES": "idh",
    "ABSORBED": "absorbed",
    "KEPT_GLOBALS": "gq",
    "FENCE": "fence",
    "SEAL": "seal",
}
"""Keys of an entity's family besides the families (the script's ``K``); see
:data:`CUSTOMER_KEYS`."""
PROFILE_KEY, IDS_KEY = ENTITY_KEYS["PROFILE"], ENTITY_KEYS["IDS"]
PENDING_KEY = ENTITY_KEYS["PENDING"]
REDIRECT_KEY, PEOPLE_KEY = ENTITY_KEYS["REDIRECT"], ENTITY_KEYS["PEOPLE"]
ACCOUNTS_KEY, KEPT_GLOBALS_KEY = ENTITY_KEYS["ACCOUNTS"], ENTITY_KEYS["KEPT_GLOBALS"]
CALL_KEY = "call:"
"""A call session's key, ``call:<call id>``, in its customer's family."""

STORE_KEYS: dict[str, str] = {
    "ENTITY": "c:{",
    "INDEX": "idx:",
    "SUPPRESSION": "sup:",
    "ERASURE": "erasure:",
    "PRODUCT_STATS": "stats:products",
    "SPEND_POPULATION": "pop:spend",
    "TREND": "trend:",
    "TREND_INDEX": "trend:index",
    "ONCE": "once:",
}
"""Keys under the store's prefix that are no one entity's (the script's ``G``): an
entity's family (``c:{<entity>}:<key>``), the identity index (``idx:<identifier>``),
erased identifiers (``sup:<hash>``), erasure tombstones (``erasure:<event id>``), the
global counters and, on a cluster, the ids a stripe counted (``once:<hour>``)."""
ENTITY = STORE_KEYS["ENTITY"]
INDEX, SUPPRESSION, ERASURE = STORE_KEYS["INDEX"], STORE_KEYS["SUPPRESSION"], STORE_KEYS["ERASURE"]
PRODUCT_STATS, SPEND_POPULATION = STORE_KEYS["PRODUCT_STATS"], STORE_KEYS["SPEND_POPULATION"]
TREND_INDEX = STORE_KEYS["TREND_INDEX"]

PROFILE_FIELDS: dict[str, str] = {
    "FIRST_SEEN": META + "first_seen",
    "LAST_SEEN": META + "last_seen",
    "VERSION": META + "version",
    "AMOUNT": SUM + "amount",
}
"""Fields of the profile hash that the script and Python read by name (the script's
``F``)."""
FIRST_SEEN, LAST_SEEN = PROFILE_FIELDS["FIRST_SEEN"], PROFILE_FIELDS["LAST_SEEN"]
VERSION, AMOUNT = PROFILE_FIELDS["VERSION"], PROFILE_FIELDS["AMOUNT"]

STATUSES: dict[str, str] = {
    "OK": "ok",
    "DUP": "dup",
    "ERASED": "erased",
    "SUPPRESSED": "suppressed",
    "NOOP": "noop",
    "ACCOUNTS": "acct",
    "ERROR": "error",
    "MOVED": "moved",
    "LIVE": "live",
    "GONE": "gone",
    "FENCED": "fenced",
    "DUMP": "dump",
    "FACTS": "facts",
}
"""The first word of each answer of the script (the script's ``S``): per delta
(``state/answers.py`` turns each into its type) and per step of the cluster protocol
(``moved`` … ``facts``, read by ``state/cluster/``)."""
MOVED, GONE, FENCED = STATUSES["MOVED"], STATUSES["GONE"], STATUSES["FENCED"]
DUMP, FACTS = STATUSES["DUMP"], STATUSES["FACTS"]

CUSTOMER_KEYS: tuple[str, ...] = (
    *ENTITY_KEYS.values(),
    *(family.key for family in FAMILIES),
)
"""Keys of a customer's (or an account's) family besides call sessions and processed-id
strings; ``accts`` (a person's account numbers) and ``people`` (an account's customer
ids) are the links between people and accounts. On a Redis Cluster
(``state/cluster/``) also ``absorbed`` (the seals of losers merged in),
``gq`` (global increments awaiting the stripe step), ``fence`` and ``seal`` (merge
fencing tokens)."""


def entity_key(prefix: str, entity: str, key: str) -> str:
    """The key ``key`` of an entity's family (hash-tagged by the entity: one slot)."""
    return f"{prefix}{ENTITY}{entity}}}:{key}"


def family_of(name: str) -> Family | None:
    """The family a field name belongs to, or None for a profile-hash field (one
    dictionary look-up per family-prefix length, as the state script's ``family_of``)."""
    for length in _FAMILY_PREFIX_LENGTHS:
        family = _FAMILY_BY_PREFIX.get(name[:length])
        if family is not None:
            return family
    return None


_FAMILY_BY_PREFIX = {family.prefix: family for family in FAMILIES}
_FAMILY_PREFIX_LENGTHS = sorted({len(family.prefix) for family in FAMILIES})


def _lua_table(names: dict[str, str]) -> str:
    return "{" + ", ".join(f"{name} = {_lua_string(value)}" for name, value in names.items()) + "}"


def _lua_string(text: str) -> str:
    return "'" + "".join(f"\\{ord(ch)}" if ord(ch) < 32 else ch for ch in text) + "'"


def lua_constants() -> str:
    """The layout as Lua definitions, rendered into the state script at ``--@LAYOUT@``."""
    families = ",\n".join(
        f"  {{prefix = {_lua_string(f.prefix)}, key = {_lua_string(f.key)}, "
        f"keep = {_lua_string(f.keep)}, kept = {f.kept}, shown = {f.shown}, "
        f"view = {_lua_string(f.view or f.key)}, since = {_lua_string(f.since)}}}"
        for f in FAMILIES
    )
    keys = ", ".join(_lua_string(key) for key in CUSTOMER_KEYS)
    return "\n".join(
        [
            "-- rendered from processors/layout.py",
            f"local RS, US, ABSENT = {_lua_string(RECORD_SEP)}, {_lua_string(UNIT_SEP)}, "
            f"{_lua_string(ABSENT)}",
            f"local VS, MS = {_lua_string(VIEW_SEP)}, {_lua_string(MEMBER_SEP)}",
            f"local ES = {_lua_string(ENTITY_SEP)}",
            f"local REJECTED = {_lua_string(COUNT + REJECTED)}",
            f"local ROLE = {_lua_string(ROLE)}",
            f"local ACCOUNT_ENTITY = {_lua_string(ACCOUNT_ENTITY)}",
            f"local ACCOUNT_SPEND = {_lua_string(ACCOUNT_SPEND)}",
            f"local FRIEND, GROUP = {_lua_string(REGISTER + FRIEND)}, "
            f"{_lua_string(REGISTER + GROUP)}",
            f"local MET, AGENT = {_lua_string(REGISTER + MET)}, {_lua_string(AGENT)}",
            f"local SEEN_HASH_BYTES, SEEN_BUCKETS = {SEEN_HASH_BYTES}, {SEEN_BUCKETS}",
            f"local SEEN, SEEN_LEGACY = {_lua_string(SEEN)}, {_lua_string(SEEN_LEGACY)}",
            f"local NEGATIVE_STREAK = {_lua_string(NEGATIVE_STREAK)}",
            f"local CALM = {_lua_string(CALM)}",
            f"local FAMILIES = {{\n{families},\n}}",
            f"local CUSTOMER_KEYS = {{{keys}}}",
            f"local K = {_lua_table(ENTITY_KEYS)}",
            f"local CALL_KEY = {_lua_string(CALL_KEY)}",
            f"local G = {_lua_table(STORE_KEYS)}",
            f"local F = {_lua_table(PROFILE_FIELDS)}",
            f"local S = {_lua_table(STATUSES)}",
        ]
    )


STRIPE = "~g"
"""On a Redis Cluster the global counters (product statistics, the spend population,
trend windows) are striped: stripe ``k`` is the entity ``~g<k>``, its counters under
``{P}{~g<k>}:`` (``stats:products``, ``pop:spend``, ``trend:<window>``, ``trend:index``)
and the ids it counted in one hash per hour (``{P}{~g<k>}:once:<hour>``, kept two hours);
an increment goes to the stripe of its id's CRC-32, readers add the stripes up."""


def global_bases(prefix: str, stripes: int = 0) -> list[str]:
    """Key prefixes of the global counters: the key prefix itself on a standalone Redis
    (``stripes`` 0), else one per stripe."""
    if stripes <= 0:
        return [prefix]
    return [f"{prefix}{{{STRIPE}{k}}}:" for k in range(stripes)]


@dataclass(slots=True)
class Sections:
    """Stored fields grouped by kind, each without its prefix: ``meta`` (``m:``),
    ``counts`` (``c:``), ``weights`` (``d:``), ``attributes`` (``a:``), ``tags``
    (``t:``), ``registers`` (``r:``), ``sums`` (``e:``), ``negatives`` (``n:``) and
    ``actions`` (``y:``)."""

    meta: dict[str, str] = field(default_factory=dict)
    counts: dict[str, str] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    registers: dict[str, str] = field(default_factory=dict)
    sums: dict[str, str] = field(default_factory=dict)
    negatives: dict[str, str] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)

    def by_kind(self) -> dict[str, dict[str, str]]:
        """Each part by the first letter of its stored prefix."""
        return {letter: getattr(self, part) for letter, part in _PARTS.items()}

    def copy(self, kinds: Iterable[str] | None = None) -> Sections:
        """A copy whose parts of these kinds (first letters; all when None) are copies
        too, the others shared."""
        copied = set(_PARTS) if kinds is None else set(kinds)
        parts = self.by_kind()
        return Sections(**{_PARTS[k]: dict(v) if k in copied else v for k, v in parts.items()})


_PARTS = {
    META[0]: "meta",
    COUNT[0]: "counts",
    WEIGHT[0]: "weights",
    ATTRIBUTE[0]: "attributes",
    TAG[0]: "tags",
    REGISTER[0]: "registers",
    SUM[0]: "sums",
    NEGATIVES.prefix[0]: "negatives",
    ACTIONS.prefix[0]: "actions",
}


def sections_of(fields: dict[str, str]) -> Sections:
    """Group stored fields by kind in one pass."""
    out = Sections()
    parts = out.by_kind()
    for name, value in fields.items():
        section = parts.get(name[0])
        if section is not None:
            section[name[2:]] = value
    return out
