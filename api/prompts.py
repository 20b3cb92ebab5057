"""Live prompts for Server-Sent Events: every serving process reads the prompts topic itself.

A :class:`PromptFeed` runs a confluent-kafka consumer on a thread of its own — no
consumer group (it assigns every partition and commits nothing), so any number of
``portrait serve`` processes and workers can serve the same agent. It starts
``PORTRAIT_API_PROMPT_HISTORY_SECONDS`` back (where the broker cannot say, from the
beginning), keeps each agent's latest ``PORTRAIT_API_PROMPT_BUFFER`` prompts, and hands
each new one to the agent's open streams on the event loop as soon as it is fetched.

Resuming: a client that reconnects with ``Last-Event-ID`` (a ``prompt_id``) gets the
buffered prompts after that one, then the live ones — nothing lost, nothing twice. A
prompt the worker re-emitted after a redelivery (same ``prompt_id``) is sent once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from portrait.config import Settings
from streams.kafka import client_config, consume_ready

log = logging.getLogger("portrait.api")


@dataclass(frozen=True, slots=True)
class Prompt:
    """One ``agent.prompt`` as it is sent: its id, its JSON, its Kafka timestamp (ms)."""

    prompt_id: str
    body: bytes
    produced_ms: float


@dataclass(slots=True)
class _Agent:
    recent: OrderedDict[str, Prompt] = field(default_factory=OrderedDict)
    streams: set[asyncio.Queue[Prompt]] = field(default_factory=set)


class PromptFeed:
    """Each agent's recent prompts and open streams, fed from the prompts topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic("agent-prompts")
        self.keep = settings.api_prompt_buffer
        self._agents: dict[str, _Agent] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.assigned = threading.Event()
        """Set once every partition of the topic is assigned (readiness)."""

    def start(self) -> None:
        """Start reading (call on the event loop that serves the streams)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="portrait-prompt-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _consumer(self) -> Consumer:
        return Consumer(
            client_config(self.settings)
            | {
                "group.id": f"portrait-prompt-feed-{time.time_ns()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "fetch.min.bytes": 1,
            }
        )

    def _assign(self, consumer: Consumer) -> None:
        since_ms = int((time.time() - self.settings.api_prompt_history_seconds) * 1000)
        while not self._stop.is_set():
            metadata = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            if metadata is not None and metadata.error is None and metadata.partitions:
                break
            time.sleep(0.5)  # the topic is created by the first worker
        else:
            return
        wanted = [TopicPartition(self.topic, p, since_ms) for p in sorted(metadata.partitions)]
        try:
            found = consumer.offsets_for_times(wanted, timeout=10)
        except Exception:  # a broker that cannot look times up: read all it keeps
            found = [TopicPartition(self.topic, tp.partition, OFFSET_BEGINNING) for tp in wanted]
        start = [
            tp if tp.offset >= 0 else TopicPartition(self.topic, tp.partition, OFFSET_BEGINNING)
            for tp in found
        ]
        consumer.assign(start)
        self.assigned.set()

    def _run(self) -> None:
        consumer = self._consumer()
        try:
            self._assign(consumer)
            while not self._stop.is_set():
                messages = consume_ready(consumer, 500, 0.1)
                prompts = [self._prompt(m) for m in messages if m.error() is None]
                found = [p for p in prompts if p is not None]
                if found and self._loop is not None:
                    self._loop.call_soon_threadsafe(self._publish, found)
        except Exception:  # the feed must not die silently: readiness reports it
            log.exception("the prompt feed stopped")
            self.assigned.clear()
        finally:
            consumer.close()

    @staticmethod
    def _prompt(message: Any) -> tuple[str, Prompt] | None:
        try:
            body = orjson.loads(message.value())
            agent, prompt_id = str(body["agent_id"]), str(body["prompt_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        _, stamp = message.timestamp()
        return agent, Prompt(prompt_id, message.value(), float(stamp))

    def _publish(self, found: list[tuple[str, Prompt]]) -> None:
        """On the event loop: keep each prompt, send it to the agent's open streams."""
        for agent_id, prompt in found:
            agent = self._agents.setdefault(agent_id, _Agent())
            if prompt.prompt_id in agent.recent:  # a re-emitted prompt: sent already
                continue
            agent.recent[prompt.prompt_id] = prompt
            while len(agent.recent) > self.keep:
                agent.recent.popitem(last=False)
            for queue in agent.streams:
                queue.put_nowait(prompt)

    def subscribe(
        self, agent_id: str, last_event_id: str | None
    ) -> tuple[list[Prompt], asyncio.Queue[Prompt]]:
        """The prompts to send first (after ``last_event_id``, when the feed has it; none
        for a new stream) and the queue of the live ones."""
        agent = self._agents.setdefault(agent_id, _Agent())
        queue: asyncio.Queue[Prompt] = asyncio.Queue()
        agent.streams.add(queue)
        backlog: list[Prompt] = []
        if last_event_id:
            kept = list(agent.recent.values())
            ids = [p.prompt_id for p in kept]
            backlog = kept[ids.index(last_event_id) + 1 :] if last_event_id in ids else kept
        return backlog, queue

    def unsubscribe(self, agent_id: str, queue: asyncio.Queue[Prompt]) -> None:
        agent = self._agents.get(agent_id)
        if agent is not None:
            agent.streams.discard(queue)

    def latest(self, agent_id: str, count: int) -> list[Prompt]:
        """The agent's newest ``count`` prompts, oldest first (the page's first view)."""
        agent = self._agents.get(agent_id)
        return list(agent.recent.values())[-count:] if agent else []
