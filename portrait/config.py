"""Portrait's configuration: one pydantic-settings class, every field a ``PORTRAIT_`` variable.

Each field here has a row in the README's configuration table; keep the two in step.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SETTINGS_DIR = Path(__file__).resolve().parent / "settings"
"""The shipped rule and catalogue files (each replaceable by its ``PORTRAIT_*_FILE``)."""
DEFAULT_PROMPTS_FILE = SETTINGS_DIR / "prompts.json"
DEFAULT_STOPWORDS_FILE = SETTINGS_DIR / "stopwords.txt"
DEFAULT_INTENTS_FILE = SETTINGS_DIR / "intents.json"
DEFAULT_NEEDS_FILE = SETTINGS_DIR / "needs.json"
DEFAULT_FACTS_FILE = SETTINGS_DIR / "facts.json"
DEFAULT_ROLES_FILE = SETTINGS_DIR / "roles.json"
DEFAULT_IDENTITY_FILE = SETTINGS_DIR / "identity.json"
LOCAL_ERASURE_KEY = b"portrait-local-erasure-key"
"""The erasure HMAC key of the local profile when none is set (never in production)."""
LOCAL_CUSTOMER_ID_KEY = b"portrait-local-customer-id-key"
"""The customer-id HMAC key of the local profile when none is set (never in production)."""
MIN_SECRET_BYTES = 16
"""The shortest key the production profile accepts."""
PLACEHOLDER_MARK = "change-me"
"""Committed secret values start with this (``k8s/base/secret.yaml``): a worker refuses
to run in production with one, so a placeholder never reaches real data."""


class Settings(BaseSettings):
    """All runtime settings, read from ``PORTRAIT_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="PORTRAIT_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_key_prefix: str = "portrait:"
    redis_durability: Literal["none", "aof", "replica"] = "none"
    """What a batch waits for before its outputs go out and its offsets are committed:
    nothing (Redis's reply; the input positions kept in Redis recover what a lost AOF
    second or a failover takes, by redelivery), ``aof`` (WAITAOF: fsynced to the local
    AOF), ``replica`` (WAIT: received by a replica)."""
    redis_durability_timeout_ms: int = Field(default=1000, ge=1)
    redis_cluster: bool = False
    """Run on a Redis Cluster (redis-py's cluster client; ``redis_url`` names one node):
    every script call touches one hash slot, identities and merges across slots follow
    the protocol in ``state/cluster/base.py``. ``portrait stack up`` then starts a
    local 3-master cluster on ``redis_url``'s port and the two after it."""
    redis_global_stripes: int = Field(default=8, ge=1, le=64)
    """On a cluster: how many keys the global counters (product statistics, spend
    population, trend windows) are striped over; readers sum them."""
    topic_prefix: str = "portrait."
    http_port: int = 6066
    http_bind: str | None = None
    """The address the HTTP port listens on (default: 127.0.0.1 in the local profile,
    every address in production)."""
    profile: Literal["local", "production"] = "local"

    topic_partitions: int = Field(default=4, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    topic_retention_ms: int = 7 * 24 * 3600 * 1000

    consumer_group: str = "portrait-worker"
    batch_max_events: int = Field(default=250, ge=1)
    batch_max_wait_seconds: float = Field(default=0.01, gt=0)
    realtime_batch_max_events: int = Field(default=250, ge=1)
    lane: Literal["all", "realtime", "bulk"] = "all"
    lane_processes: bool = True
    """``--lane all`` runs the bulk lane in a process of its own, started by the worker
    and niced by ``PORTRAIT_BACKGROUND_NICE``: the operating system then runs the
    realtime lane first (off: both lanes share one process and one event loop)."""
    fetch_max_wait_ms: int = Field(default=20, ge=1)
    redis_chunk_events: int = Field(default=250, ge=1)
    max_event_bytes: int = Field(default=256 * 1024, ge=256)

    # None means "the profile's default": 6 s on the local broker, whose group joins
    # take half the session timeout, and Kafka's own 45 s in production.
    session_timeout_seconds: float | None = None

    dedup_retention_seconds: int = 7 * 24 * 3600
    erasure_key: SecretStr = SecretStr("")
    """HMAC key of erased identifiers' suppression entries; required in production."""
    customer_id_key: SecretStr = SecretStr("")
    """HMAC key customer ids are derived with (an id tells nothing of the identifier
    that created it without this key); required in production, never changed once set."""
    erasure_suppression_days: int = Field(default=30, ge=1)
    profiles_topic: bool = True
    """A worker that runs the bulk lane starts a ``portrait.profiles`` publisher beside
    itself (off: run ``portrait publish-profiles`` apart, or none)."""
    background_nice: int = Field(default=10, ge=0, le=19)
    """How much lower the CPU priority of background work is: the profiles publisher a
    worker starts, ``portrait publish-profiles``, a bulk-only worker, replays and imports
    (0: the same). On a shared host the realtime lane then gets a core first."""
    api_tokens_file: Path | None = None
    """JSON list of API tokens: subject, scope, token_sha256 (none set: every /v1 request
    is refused with 401); read again when it changes (revocation without a restart)."""
    api_tokens_check_seconds: float = Field(default=2.0, gt=0)
    """How often the tokens file's modification time is looked at."""
    api_max_streams: int = Field(default=200, ge=1)
    """Live prompt streams one serving process holds open, all tokens together."""
    api_max_streams_per_token: int = Field(default=4, ge=1)
    api_max_requests: int = Field(default=64, ge=1)
    """Requests one serving process answers at once (streams not counted)."""
    api_max_requests_per_token: int = Field(default=8, ge=1)
    api_max_similarity: int = Field(default=2, ge=1)
    """Similarity searches (``/problems?like=``) run at once: each encodes text."""
    api_request_timeout_seconds: float = Field(default=15.0, gt=0)
    """The longest a request may take to arrive and be answered (slow clients); a
    stream's single write gets as long."""
    api_session_hours: float = Field(default=12.0, gt=0)
    """How long an agent page's sign-in lasts."""
    api_auth_failures: int = Field(default=10, ge=1)
    """Failed tokens one client address may present per minute before it is slowed
    down (429 with Retry-After until the minute ends)."""
    metrics_port: int | None = None
    """Serve ``/metrics`` on this port alone (and not on ``PORTRAIT_HTTP_PORT``): the
    public API's port then carries no metrics."""
    data_dir: Path = Path.home() / ".cache" / "portrait" / "data"
    """Where the worker may write files (the stream framework's data directory); with a
    read-only root filesystem, a mounted volume."""
    agent_access_hours: float = Field(default=24.0, gt=0)
    api_prompt_buffer: int = Field(default=500, ge=1)
    """Prompts kept per agent for Server-Sent Events resumption (Last-Event-ID)."""
    api_prompt_history_seconds: int = Field(default=3600, ge=0)
    """How far back a serving process reads the prompts topic when it starts."""
    timezone: str = "Asia/Shanghai"
    preference_half_life_days: float = Field(default=30.0, gt=0)
    attribute_confidence: float = Field(default=0.9, ge=0, le=1)
    closeness_friend_weight: float = 3.0
    closeness_group_weight: float = 1.0
    closeness_message_weight: float = 0.5
    closeness_recency_weight: float = 1.0
    roles_file: Path = DEFAULT_ROLES_FILE
    identity_file: Path = DEFAULT_IDENTITY_FILE
    default_region: str = "CN"
    emotion_enabled: bool = True
    model_process: bool = True
    embedding_model: str = "use-multilingual-v3"
    scores_enabled: bool = True
    customer_model_version: str = ""
    learn_every: int = Field(default=200, ge=0)
    learn_tolerance: float = Field(default=0.02, ge=0)
    assist_phase_boundaries_ms: tuple[int, int, int] = (30_000, 120_000, 300_000)
    assist_min_offers: int = Field(default=3, ge=0)
    assist_min_rate: float = Field(default=0.3, ge=0, le=1)
    assist_decline_days: float = Field(default=30.0, ge=0)
    call_session_ttl_seconds: int = Field(default=4 * 3600, ge=1)
    call_ended_ttl_seconds: int = Field(default=600, ge=1)
    escalate_negative_streak: int = Field(default=3, ge=1)
    escalate_value: float = Field(default=0.7, ge=0, le=1)
    prompts_file: Path = DEFAULT_PROMPTS_FILE
    facts_enabled: bool = True
    facts_file: Path = DEFAULT_FACTS_FILE
    facts_link_identities: bool = False
    ocr_enabled: bool = True
    ocr_image_dir: Path | None = None
    ocr_allowed_hosts: tuple[str, ...] = ()
    ocr_fetch_urls: bool = False
    ocr_max_image_bytes: int = Field(default=5_000_000, ge=1)
    ocr_max_image_pixels: int = Field(default=16_000_000, ge=1)
    """Images are refused past this many pixels, read from their header before any
    decoding (a small compressed file can hold a huge image)."""
    ocr_fetch_timeout_seconds: float = Field(default=3.0, gt=0)
    """The whole fetch of an image URL, connection to last byte."""
    keywords_enabled: bool = True
    keywords_top_k: int = Field(default=10, ge=0)
    stopwords_file: Path = DEFAULT_STOPWORDS_FILE
    intents_enabled: bool = True
    intents_file: Path = DEFAULT_INTENTS_FILE
    intent_min_similarity: float = Field(default=0.5, ge=-1, le=1)
    needs_file: Path = DEFAULT_NEEDS_FILE
    problem_intents: tuple[str, ...] = ("complaint", "outage", "billing", "repair")
    trends_window_seconds: int = Field(default=3600, ge=1)
    trends_grace_seconds: int = Field(default=60, ge=0)
    trends_retention_seconds: int = Field(default=7 * 86400, ge=1)
    trends_check_seconds: float = Field(default=10.0, gt=0)
    trends_top_k: int = Field(default=20, ge=1)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_ca_file: str = ""
    kafka_ssl_cert_file: str = ""
    kafka_ssl_key_file: str = ""
    redis_password: SecretStr = SecretStr("")
    redis_ssl_ca_file: str = ""
    log_level: str = "INFO"
    stack_dir: Path = Path.home() / ".cache" / "portrait"

    @cached_property
    def redis_port(self) -> int:
        """Port of ``redis_url`` (6379 when it names none)."""
        return urlsplit(self.redis_url).port or 6379

    @cached_property
    def kafka_port(self) -> int:
        """Port of the first bootstrap server."""
        first = self.kafka_bootstrap.split(",")[0]
        return int(first.rsplit(":", 1)[1]) if ":" in first else 9092

    @property
    def bind_host(self) -> str:
        """Where HTTP servers listen (``PORTRAIT_HTTP_BIND``, else by profile)."""
        if self.http_bind:
            return self.http_bind
        return "127.0.0.1" if self.profile == "local" else "0.0.0.0"

    @property
    def effective_session_timeout(self) -> float:
        """The consumer session timeout in seconds for this profile."""
        if self.session_timeout_seconds is not None:
            return self.session_timeout_seconds
        return 6.0 if self.profile == "local" else 45.0

    @property
    def reads_images(self) -> bool:
        """Chat images are read: OCR on, and the fact extraction it feeds on."""
        return self.facts_enabled and self.ocr_enabled

    def kafka_client_config(self) -> dict[str, str]:
        """Security settings for confluent-kafka clients (librdkafka names)."""
        config: dict[str, str] = {"security.protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        for key, path in (
            ("ssl.ca.location", self.kafka_ssl_ca_file),
            ("ssl.certificate.location", self.kafka_ssl_cert_file),
            ("ssl.key.location", self.kafka_ssl_key_file),
        ):
            if path and self.kafka_security_protocol.endswith("SSL"):
                config[key] = path
        return config

    def faust_credentials(self) -> Any:
        """``broker_credentials`` for Faust (aiokafka), or None for PLAINTEXT."""
        import ssl

        import faust

        context = None
        if self.kafka_security_protocol.endswith("SSL"):
            context = ssl.create_default_context(cafile=self.kafka_ssl_ca_file or None)
            if self.kafka_ssl_cert_file:
                context.load_cert_chain(self.kafka_ssl_cert_file, self.kafka_ssl_key_file or None)
        if self.kafka_security_protocol.startswith("SASL"):
            return faust.SASLCredentials(
                username=self.kafka_sasl_username,
                password=self.kafka_sasl_password.get_secret_value(),
                mechanism=self.kafka_sasl_mechanism,
                ssl_context=context,
            )
        return faust.SSLCredentials(context) if context is not None else None

    def redis_options(self) -> dict[str, Any]:
        """Keyword arguments for redis-py's ``from_url``: password and TLS CA
        (TLS itself: a ``rediss://`` URL)."""
        options: dict[str, Any] = {}
        if self.redis_password.get_secret_value():
            options["password"] = self.redis_password.get_secret_value()
        if self.redis_ssl_ca_file and self.redis_url.startswith("rediss://"):
            options["ssl_ca_certs"] = self.redis_ssl_ca_file
        return options

    def as_env(self) -> dict[str, str]:
        """These settings as ``PORTRAIT_*`` variables, to hand to a child process."""
        return {
            f"PORTRAIT_{name.upper()}": json.dumps(value)
            if isinstance(value, (tuple, list))
            else value.get_secret_value()
            if isinstance(value, SecretStr)
            else str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }

    def topic(self, name: str) -> str:
        """Full topic name for a short name such as ``chat`` or ``dlq``."""
        return f"{self.topic_prefix}{name}"

    def erasure_hash_key(self) -> bytes:
        """The erasure HMAC key; the local profile has a fixed one when none is set, the
        production profile refuses to run without one (``ConfigurationError``)."""
        return self._key("erasure_key", LOCAL_ERASURE_KEY)

    def customer_id_hash_key(self) -> bytes:
        """The customer-id HMAC key; as :meth:`erasure_hash_key`."""
        return self._key("customer_id_key", LOCAL_CUSTOMER_ID_KEY)

    def _key(self, name: str, local: bytes) -> bytes:
        key = cast(SecretStr, getattr(self, name)).get_secret_value()
        if self.profile != "production":
            return key.encode("utf-8") if key else local
        variable = f"PORTRAIT_{name.upper()}"
        if not key:
            raise ConfigurationError(
                f"{variable} is required in the production profile (docs/operations.md, Secrets)"
            )
        if len(key.encode("utf-8")) < MIN_SECRET_BYTES or _placeholder(key):
            raise ConfigurationError(
                f"{variable} is a placeholder or shorter than {MIN_SECRET_BYTES} bytes: "
                "set a random secret (docs/operations.md, Secrets)"
            )
        return key.encode("utf-8")

    def check_production(self) -> None:
        """Refuse to start with what the production profile must not run with: a missing,
        short or placeholder key, a placeholder password (``ConfigurationError``)."""
        self.erasure_hash_key()
        self.customer_id_hash_key()
        for name in ("kafka_sasl_password", "redis_password"):
            value = cast(SecretStr, getattr(self, name)).get_secret_value()
            if self.profile == "production" and _placeholder(value):
                raise ConfigurationError(
                    f"PORTRAIT_{name.upper()} is still the committed placeholder: set the "
                    "real secret (docs/operations.md, Secrets)"
                )


def yield_cpu(settings: Settings) -> None:
    """Lower this process's CPU priority by ``PORTRAIT_BACKGROUND_NICE`` (background
    work: the operating system then runs the realtime lane first)."""
    if settings.background_nice:
        import os

        os.nice(settings.background_nice)


def _placeholder(value: str) -> bool:
    return value.strip().lower().startswith(PLACEHOLDER_MARK)


def load_settings() -> Settings:
    """Read the settings from the environment."""
    return Settings()


class ConfigurationError(ValueError):
    """The configuration cannot run as it is (the message says what to set)."""
