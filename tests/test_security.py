"""Kafka SASL/SSL and Redis password/TLS reach every client, and secrets stay secret."""

from __future__ import annotations

import sys

import faust
import pytest

from portrait.config import Settings
from streams.kafka import RDKAFKA_LOG, client_config


def test_plaintext_by_default() -> None:
    settings = Settings()
    assert client_config(settings) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
        "logger": RDKAFKA_LOG,
    }
    assert settings.faust_credentials() is None and settings.redis_options() == {}


def test_sasl_ssl_reaches_confluent_and_faust() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="portrait",
        kafka_sasl_password="s3cret",  # type: ignore[arg-type]
    )
    config = client_config(settings)
    assert config["sasl.mechanism"] == "SCRAM-SHA-512" and config["sasl.password"] == "s3cret"
    credentials = settings.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.ssl_context is not None and credentials.username == "portrait"
    # never printed: repr and dumps hide it; only a child process's environment gets it
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())
    assert settings.as_env()["PORTRAIT_KAFKA_SASL_PASSWORD"] == "s3cret"


def test_redis_password_and_tls_options() -> None:
    settings = Settings(
        redis_url="rediss://cache.internal:6380/0",
        redis_password="pw",  # type: ignore[arg-type]
        redis_ssl_ca_file="/etc/ssl/redis-ca.pem",
    )
    assert settings.redis_options() == {"password": "pw", "ssl_ca_certs": "/etc/ssl/redis-ca.pem"}
    plain = Settings(redis_ssl_ca_file="/etc/ssl/redis-ca.pem")  # redis:// → no TLS options
    assert plain.redis_options() == {}


def test_production_refuses_missing_short_and_placeholder_secrets() -> None:
    from portrait.config import ConfigurationError

    good = {"erasure_key": "e" * 32, "customer_id_key": "k" * 32}
    Settings(profile="production", **good).check_production()
    for change, mentioned in (
        ({"erasure_key": ""}, "PORTRAIT_ERASURE_KEY is required"),
        ({"customer_id_key": ""}, "PORTRAIT_CUSTOMER_ID_KEY is required"),
        ({"customer_id_key": "short"}, "PORTRAIT_CUSTOMER_ID_KEY is a placeholder or shorter"),
        ({"erasure_key": "change-me-erasure-key"}, "PORTRAIT_ERASURE_KEY is a placeholder"),
        ({"redis_password": "change-me"}, "PORTRAIT_REDIS_PASSWORD is still the committed"),
    ):
        with pytest.raises(ConfigurationError, match=mentioned):
            Settings(profile="production", **(good | change)).check_production()
    Settings(profile="local").check_production()  # local runs with fixed keys


def test_error_logs_say_what_failed_and_where_without_personal_values() -> None:
    import json
    import logging

    from portrait.logs import JsonFormatter

    try:
        raise PermissionError(13, "Permission denied", "/home/portrait/faust-data")
    except PermissionError:
        record = logging.LogRecord("x", logging.ERROR, "f", 1, "start failed", None, sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert entry["error"] == "PermissionError" and entry["path"] == "/home/portrait/faust-data"
    assert "Permission denied" in entry["error_message"]
    try:
        raise ValueError("bad input_value='我很生气 call me' from +86 139 1234 5678, a@b.cn")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, "f", 1, "failed", None, sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    for personal in ("生气", "call me", "1234", "a@b.cn"):
        assert personal not in entry["error_message"]
    assert entry["error_message"].startswith("bad input_value=")
