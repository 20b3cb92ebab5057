"""Portrait's business logic as plain functions: events and state in, state changes and outputs out.

Nothing here talks to Kafka or Redis; ``streams/`` wires these to the topics and
``state`` applies the state changes atomically.
"""
