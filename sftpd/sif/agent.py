"""The pull-mode agent's conversation: register, request each object, poll and acknowledge.

SIF_Register (mode Pull); one SIF_Request per object; then SIF_GetMessage until every request
has its last packet, acknowledging each delivered message with SIF_Ack (status 1) once its
objects are taken, waiting --poll-seconds whenever the queue is empty (status 9), and giving
up after --wait-seconds in all. A response's packets are counted in by SIF_PacketNumber until
the one with SIF_MorePackets No; a packet seen twice is acknowledged and not taken again.
Messages that answer no request of this run (an earlier, killed run's responses, events) are
acknowledged too, so they never block the queue, and their objects are ignored.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sftpd.events import emit
from sftpd.sif import messages
from sftpd.sif.errors import PullError, PullReason
from sftpd.sif.messages import Delivered, Outgoing, Reply
from sftpd.sif.transport import Transport

# Receives each delivered packet's reply bytes (the audit copy): sequence, object, packet.
SaveRaw = Callable[[int, str, int, bytes], None]


@dataclass
class _Pending:
    """One SIF_Request and the packets of its response so far."""

    object_name: str
    packets: set[int] = field(default_factory=set)
    last: int | None = None  # the packet number that said SIF_MorePackets No

    @property
    def complete(self) -> bool:
        return self.last is not None and self.packets >= set(range(1, self.last + 1))


@dataclass
class PullStats:
    """What the zone delivered to this run."""

    objects: Counter[str] = field(default_factory=Counter)
    messages: int = 0  # delivered messages acknowledged
    packets: int = 0  # response packets taken


class Agent:
    """One pull over one transport; objects go to on_object, raw replies to save_raw."""

    def __init__(self, transport: Transport, source_id: str, max_buffer_size: int, *,
                 on_object: Callable[[str, ET.Element], None], save_raw: SaveRaw,
                 wait_seconds: float, poll_seconds: float) -> None:
        self.transport = transport
        self.source_id = source_id
        self.max_buffer_size = max_buffer_size
        self.on_object = on_object
        self.save_raw = save_raw
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.stats = PullStats()
        self._pending: dict[str, _Pending] = {}

    def _send(self, message: Outgoing, what: str, accept: messages.Accept | None = None
              ) -> tuple[Reply, bytes]:
        data = self.transport.exchange(message.body, what)
        reply = messages.read_reply(data, accept, self._take)
        if reply.kind != "SIF_Ack":
            raise PullError(PullReason.PROTOCOL_ERROR,
                            f"{what}: the zone answered with {reply.kind or 'nothing'}, "
                            "not a SIF_Ack")
        if reply.error is not None:
            raise reply.error.failure(what)
        if reply.original_msg_id and reply.original_msg_id != message.msg_id:
            raise PullError(PullReason.PROTOCOL_ERROR,
                            f"{what}: the SIF_Ack answers message {reply.original_msg_id[:40]}"
                            f", not {message.msg_id}")
        if reply.status_code == messages.STATUS_SLEEPING:
            raise PullError(PullReason.RECEIVER_SLEEPING,
                            f"{what}: the zone says it is sleeping (SIF_Status 8)")
        if reply.status_code not in (messages.STATUS_SUCCESS, messages.STATUS_NO_MESSAGES,
                                     messages.STATUS_ALREADY_HAVE):
            raise PullError(PullReason.PROTOCOL_ERROR,
                            f"{what}: unexpected SIF_Status {reply.status_code}")
        return reply, data

    def _take(self, name: str, elem: ET.Element) -> None:
        self.stats.objects[name] += 1
        self.on_object(name, elem)

    def _wanted(self, delivered: Delivered) -> bool:
        pending = self._pending.get(delivered.request_msg_id)
        return (delivered.kind == "SIF_Response" and pending is not None
                and delivered.packet_number >= 1
                and delivered.packet_number not in pending.packets)

    def pull(self, objects: tuple[str, ...]) -> PullStats:
        """Register, request every object, then poll until each response is complete."""
        self._send(messages.register(self.source_id, self.max_buffer_size), "SIF_Register")
        emit("pull.registered", source_id=self.source_id, max_buffer_size=self.max_buffer_size)
        for name in objects:
            message = messages.request(self.source_id, name, self.max_buffer_size)
            self._send(message, f"SIF_Request for {name}")
            self._pending[message.msg_id] = _Pending(name)
            emit("pull.requested", object=name, msg_id=message.msg_id)
        deadline = time.monotonic() + self.wait_seconds
        sequence = 0
        while not all(p.complete for p in self._pending.values()):
            reply, data = self._send(messages.get_message(self.source_id), "SIF_GetMessage",
                                     self._wanted)
            delivered = reply.delivered
            if reply.status_code == messages.STATUS_NO_MESSAGES or delivered is None:
                if time.monotonic() + self.poll_seconds > deadline:
                    raise PullError(PullReason.RESPONSES_MISSING, self._missing())
                time.sleep(self.poll_seconds)
                continue
            sequence += 1
            self._delivered(delivered, data, sequence)
            if time.monotonic() > deadline:
                raise PullError(PullReason.RESPONSES_MISSING, self._missing())
        return self.stats

    def _delivered(self, delivered: Delivered, data: bytes, sequence: int) -> None:
        """Check one delivered message, keep its audit copy, acknowledge it."""
        if not delivered.msg_id or not delivered.source_id:
            raise PullError(PullReason.PROTOCOL_ERROR, "a delivered message has no SIF_MsgId "
                                                       "or SIF_SourceId in its header")
        pending = self._pending.get(delivered.request_msg_id)
        ours = delivered.kind == "SIF_Response" and pending is not None
        if ours and pending is not None:
            if delivered.error is not None:
                raise delivered.error.failure(f"the response to the request for "
                                              f"{pending.object_name}")
            if delivered.packet_number < 1 or delivered.more_packets is None:
                raise PullError(PullReason.PROTOCOL_ERROR,
                                f"a response packet for {pending.object_name} lacks "
                                "SIF_PacketNumber or SIF_MorePackets")
            if delivered.packet_number not in pending.packets:
                if pending.last is not None and delivered.packet_number > pending.last:
                    raise PullError(PullReason.PROTOCOL_ERROR,
                                    f"packet {delivered.packet_number} for "
                                    f"{pending.object_name} comes after its last packet "
                                    f"{pending.last}")
                pending.packets.add(delivered.packet_number)
                if not delivered.more_packets:
                    pending.last = delivered.packet_number
                self.stats.packets += 1
                self.save_raw(sequence, pending.object_name, delivered.packet_number, data)
                emit("pull.packet", object=pending.object_name,
                     packet=delivered.packet_number, more=delivered.more_packets,
                     objects=sum(delivered.objects.values()), bytes=len(data))
        else:
            emit("pull.ignored", kind=delivered.kind, msg_id=delivered.msg_id[:40],
                 request_msg_id=delivered.request_msg_id[:40])
        self._send(messages.ack(self.source_id, delivered.source_id, delivered.msg_id),
                   "SIF_Ack")
        self.stats.messages += 1

    def _missing(self) -> str:
        missing = [f"{p.object_name} ({len(p.packets)} packet(s) so far)"
                   for p in self._pending.values() if not p.complete]
        return (f"the zone's queue held no response for {', '.join(missing)} within "
                f"{self.wait_seconds:g} s of polling")
