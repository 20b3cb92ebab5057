"""Human-readable text for profiles and output events (the CLI's non-JSON output)."""

from __future__ import annotations

from typing import Any

import orjson


def render_profile(profile: dict[str, Any]) -> str:
    """A profile as a short indented summary."""
    stats = profile["stats"]
    prefs = profile["preferences"]
    lines = [
        f"customer {profile['customer_id']}  (version {profile['version']})",
        "  identifiers: "
        + ", ".join(f"{k}={v}" for k, vals in profile["identifiers"].items() for v in vals),
        f"  events: {stats['events_total']}  by channel: "
        + ", ".join(f"{k} {v}" for k, v in stats["by_channel"].items()),
        f"  first seen {stats['first_seen']}  last seen {stats['last_seen']}",
        f"  prefers: channel {prefs['channel']}, time of day {prefs['time_of_day']}",
    ]
    emotion, scores = profile["emotion"], profile["scores"]
    if emotion["last"] is not None:
        lines.append(
            f"  emotion: last {emotion['last']}, average {emotion['average']}, "
            f"negative streak {emotion['negative_streak']}"
        )
    if scores["model_version"] is not None:
        lines.append(
            f"  scores: value {scores['value']}, loyalty {scores['loyalty']}, churn risk "
            f"{scores['churn_risk']} → priority {scores['priority']} ({scores['model_version']})"
        )
    if profile["relationships"]:
        lines.append(
            "  closest employees: "
            + ", ".join(
                f"{r['employee_id']} {r['closeness']}" for r in profile["relationships"][:5]
            )
        )
    if profile["attributes"]:
        lines.append("  attributes:")
        for name, attr in profile["attributes"].items():
            lines.append(
                f"    {name:12} {attr['value']!s:24} ({attr['source']}, "
                f"confidence {attr['confidence']}, {attr['updated_at']})"
            )
    if profile["tags"]:
        lines.append("  tags: " + ", ".join(profile["tags"]))
    for account in profile.get("accounts", []):
        credit = account["indicators"]["credit"]
        lines.append(
            f"  account {account['account_no']}: role {account['role'] or '-'}, "
            f"{account['stats']['events_total']} account events, credit {credit}"
        )
    for rejection in profile.get("identity_rejections", []):
        lines.append(
            f"  rejected identifier: {rejection['kind']} ({rejection['reason']}) "
            f"×{rejection['count']}"
        )
    return "\n".join(lines)


def render_output(raw: bytes) -> str:
    """One output event as a single line."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return f"<{len(raw)} bytes, not JSON>"
    kind = event.get("type", "?")
    if kind == "profile.changed":
        fields = ", ".join(change["field"] for change in event["changed"])
        return (
            f"profile.changed  {event['customer_id']} v{event['version']}  "
            f"changed: {fields}  (from {event['source_event_id']})"
        )
    if kind == "profile.merged":
        return (
            f"profile.merged   {event['merged_id']} → {event['customer_id']}  "
            f"(from {event['source_event_id']})"
        )
    if kind == "account.changed":
        fields = ", ".join(change["field"] for change in event["changed"])
        return (
            f"account.changed  {event['account_no']} v{event['version']}  "
            f"changed: {fields}  (from {event['source_event_id']})"
        )
    if kind == "dlq.record":
        return (
            f"dlq.record       {event['topic']}[{event['partition']}]@{event['offset']}  "
            f"reason: {event['reason']}"
        )
    return f"{kind}  " + orjson.dumps(event).decode()[:160]
