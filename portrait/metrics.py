"""Prometheus metrics: ``portrait_`` prefix, base units, counters ending in ``_total``.

No customer or event ids as labels: label values come from small fixed sets.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from portrait.config import Settings

EVENTS = Counter(
    "portrait_events_total",
    "Input events by topic and outcome (ok, duplicate, dlq, suppressed: an erased person's).",
    ["topic", "outcome"],
)
OUTPUTS = Counter("portrait_outputs_total", "Output events delivered, by topic.", ["topic"])
DLQ = Counter("portrait_dlq_total", "Records sent to the DLQ, by reason code.", ["reason"])
MERGES = Counter("portrait_merges_total", "Customers merged into another customer.")
IDENTITY_REJECTIONS = Counter(
    "portrait_identity_rejections_total",
    "Identifiers the identity rules refused, by kind and reason (blocked, limit, conflict).",
    ["kind", "reason"],
)
BATCH_SIZE = Histogram(
    "portrait_batch_size_events",
    "Events per processed batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
BATCH_SECONDS = Histogram(
    "portrait_batch_processing_seconds",
    "Time to process one batch: decode, state update, outputs delivered.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REDIS_SECONDS = Histogram(
    "portrait_redis_seconds",
    "Redis round trip per batch, by operation.",
    ["operation"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
BATCH_RETRIES = Counter(
    "portrait_batch_retries_total", "Batches retried after a Redis or Kafka failure."
)
STATE_REWINDS = Counter(
    "portrait_state_rewinds_total",
    "Input positions Redis did not hold as expected, by what followed: 'seek' (a partition "
    "started from Redis's position, behind Kafka's committed offset), 'behind' (Redis lost "
    "writes mid-run: rejoin), 'fenced' (a newer generation owns the partition).",
    ["kind"],
)
CLUSTER_RESTARTS = Counter(
    "portrait_cluster_restarts_total",
    "Events resolved again on a Redis Cluster: an identifier claimed by another worker "
    "first, or a person merged away or erased between resolution and update.",
)
CLUSTER_MERGES = Counter(
    "portrait_cluster_merges_total",
    "Merges of people on a Redis Cluster, by how they ended: 'event' (with the event that "
    "joined them) or 'completed' (an interrupted merge finished by a later resolution).",
    ["kind"],
)
READY = Gauge("portrait_worker_ready", "1 when the worker has partitions and its stores answer.")
MODEL_SECONDS = Histogram(
    "portrait_model_inference_seconds",
    "Model inference time per call (one call per chunk of events), by model.",
    ["model"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MODEL_UPDATES = Counter(
    "portrait_model_updates_total",
    "Incremental learning rounds by model and result (accepted, rejected).",
    ["model", "result"],
)
SCORES = Histogram(
    "portrait_customer_score",
    "Customer-feature model scores of changed customers, by model version and score.",
    ["model_version", "score"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
PROMPTS = Counter(
    "portrait_prompts_total",
    "Agent prompts emitted, by channel (call, chat) and kind.",
    ["channel", "kind"],
)
PROMPT_LATENCY = Histogram(
    "portrait_prompt_latency_seconds",
    "From the source event's Kafka timestamp to the prompt being built for sending.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CONSUMER_LAG = Gauge(
    "portrait_consumer_lag_messages",
    "High-water mark minus committed offset, per input topic and partition.",
    ["topic", "partition"],
)
API_REQUESTS = Counter(
    "portrait_api_requests_total",
    "HTTP API requests answered, by endpoint (the route, never an identifier) and status.",
    ["endpoint", "code"],
)
API_SECONDS = Histogram(
    "portrait_api_request_seconds",
    "HTTP API answer time, by endpoint (Server-Sent Events: until the stream opens).",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
)
SSE_CLIENTS = Gauge("portrait_api_sse_clients", "Open Server-Sent Events streams of prompts.")
API_REFUSED = Counter(
    "portrait_api_refused_total",
    "HTTP API requests refused with 429, by reason (requests_total, requests_per_token, "
    "streams_total, streams_per_token, similarity_total, auth_failures).",
    ["reason"],
)


def serve_metrics_apart(settings: Settings, registry: object = REGISTRY) -> None:
    """``/metrics`` on ``PORTRAIT_METRICS_PORT`` alone (a thread of this process), when
    it is set: scrapes then reach a port the public API does not share."""
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, addr=settings.bind_host, registry=registry)  # type: ignore[arg-type]


class WithCompanion:
    """This process's metrics and those of the process that runs its worker's other
    lane (read from ``url`` at each scrape), as one exposition: every sample gains a
    ``lane`` label, so one scrape of a worker sees both of its lanes. A companion that
    does not answer within a second leaves its samples out of that scrape."""

    def __init__(self, url: str, own_lane: str, companion_lane: str) -> None:
        self.url = url
        self.own_lane = own_lane
        self.companion_lane = companion_lane

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for lane, source in (
            (self.own_lane, REGISTRY.collect()),
            (self.companion_lane, self._companion()),
        ):
            for family in source:
                if family.name.endswith("_created"):  # a parsed counter's creation times
                    continue
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                merged.samples.extend(
                    Sample(s.name, s.labels | {"lane": lane}, s.value, s.timestamp, s.exemplar)
                    for s in family.samples
                    if not s.name.endswith("_created")  # two processes' would clash
                )
        return list(families.values())

    def _companion(self) -> Iterable[Metric]:
        try:
            with urllib.request.urlopen(self.url, timeout=1.0) as response:
                text = response.read().decode()
        except OSError:
            return []
        return list(text_string_to_metric_families(text))
