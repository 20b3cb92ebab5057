"""Kafka SASL/SSL and Redis password/TLS reach every client, and secrets stay secret."""

from __future__ import annotations

import faust

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
