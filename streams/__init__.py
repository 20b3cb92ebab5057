"""Kafka wiring: the Faust app (live worker) and the confluent-kafka plumbing.

Thin by design: decoding, state changes and outputs live in ``processors/`` and
``state``; this package moves bytes and acknowledges offsets.
"""
