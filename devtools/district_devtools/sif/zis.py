"""A stand-in for a SIF 2.x Zone Integration Server, for tests and the bench only (never shipped).

No open-source SIF 2.x ZIS is published anywhere this project can install from, so this one
was written from the SIF Implementation Specification's message definitions. Run it as its own
process: `python -m district_devtools.sif.zis --port-file F --cert ... --key ... [options]`.

What it implements:
- the HTTPS transport (TLS with the test CA's server certificate; HTTP basic authentication,
  or a client certificate from the test CA required at the handshake), one POSTed SIF_Message
  per exchange, bodies bounded to 1 MiB;
- SIF_Register (it records SIF_Name, SIF_Version, SIF_MaxBufferSize, SIF_Mode, and refuses any
  mode but Pull with a Registration SIF_Error);
- SIF_Request for SchoolInfo, StudentPersonal, StudentSchoolEnrollment, StudentContact (SIF US
  before 2.3), StudentContactPersonal and StudentContactRelationship (2.3 on) and
  StaffPersonal: it plays the providing agent too, and queues the SIF_Response for the
  requester at once, split into packets (SIF_PacketNumber, SIF_MorePackets) so that each
  delivery fits the requester's registered SIF_MaxBufferSize;
- one queue per agent (by SIF_SourceId); SIF_SystemControl/SIF_GetMessage delivers the head of
  the queue inside SIF_Ack/SIF_Status(0)/SIF_Data, again and again until the agent's SIF_Ack
  names it, or answers SIF_Status 9 when the queue is empty;
- a journal (JSON lines) of every message received, for the tests to check.

What it does not: SIF_Event, SIF_Provide/SIF_Subscribe and provisioning (every agent may request
every object), SIF_Query conditions and field restrictions (a request returns every object),
push mode, SIF_Sleep/SIF_Wakeup, SIF_Ping, message-level encryption and signatures, schema
validation of the agent's messages, Selective Message Blocking, persistence (the queue lives in
memory), and the SIF 2.x data model beyond the elements the agent reads
(district_devtools.sif.data).

Fault switches (--fault), for the tests: register-error, request-error (a Request and Response
SIF_Error in the response), empty (requests accepted, nothing ever queued), malformed (a
delivery that is not well-formed XML), xxe (a delivery with an external entity), billion-laughs
(a delivery with nested entities), cut (the first delivery's connection closed halfway through
its body), sleeping (SIF_Status 8 to SIF_GetMessage), oversize (a delivery padded with 256 KiB
of whitespace after its root element).
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import socket
import ssl
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from defusedxml.ElementTree import fromstring

from district_devtools.sif import data

NAMESPACE = "http://www.sifinfo.org/infrastructure/2.x"
ZIS_SOURCE_ID = "district-sftp-test-zis"
MAX_REQUEST = 1 << 20
# Room in a delivery around the objects: the SIF_Ack, its header and the SIF_Response's own.
PACKET_OVERHEAD = 2048
_PLACEHOLDER = "@@SIF_OBJECTS@@"
FAULTS = ("register-error", "request-error", "empty", "malformed", "xxe", "billion-laughs",
          "cut", "sleeping", "oversize")
OVERSIZE_PADDING = 256 * 1024
XXE_TARGET = "/etc/hostname"


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _find(elem: ET.Element, *names: str) -> ET.Element | None:
    """The descendant at the path of local names (namespaces ignored), or None."""
    current: ET.Element | None = elem
    for name in names:
        if current is None:
            return None
        current = next((c for c in current if _local(c.tag) == name), None)
    return current


def _text(elem: ET.Element, *names: str) -> str:
    found = _find(elem, *names)
    return "" if found is None else (found.text or "").strip()


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = text
    return child


def _msg_id() -> str:
    return uuid.uuid4().hex.upper()


def _header(parent: ET.Element, destination: str | None = None) -> str:
    header = _sub(parent, "SIF_Header")
    msg_id = _msg_id()
    _sub(header, "SIF_MsgId", msg_id)
    _sub(header, "SIF_Timestamp", datetime.now(UTC).isoformat(timespec="seconds"))
    _sub(header, "SIF_SourceId", ZIS_SOURCE_ID)
    if destination:
        _sub(header, "SIF_DestinationId", destination)
    return msg_id


def _bytes(root: ET.Element) -> bytes:
    out: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return out


def ack(agent: str, original: str, code: int | None = 0,
        error: tuple[int, int, str] | None = None, delivered: bytes | None = None) -> bytes:
    """A SIF_Ack: a status code (with the delivered message inside SIF_Data), or an error."""
    root = ET.Element("SIF_Message", xmlns=NAMESPACE, Version="2.0r1")
    body = _sub(root, "SIF_Ack")
    _header(body, agent)
    _sub(body, "SIF_OriginalSourceId", agent)
    _sub(body, "SIF_OriginalMsgId", original)
    if error is not None:
        err = _sub(body, "SIF_Error")
        _sub(err, "SIF_Category", str(error[0]))
        _sub(err, "SIF_Code", str(error[1]))
        _sub(err, "SIF_Desc", error[2])
    else:
        status = _sub(body, "SIF_Status")
        _sub(status, "SIF_Code", str(code))
        if delivered is not None:
            _sub(status, "SIF_Data", _PLACEHOLDER)
    out = _bytes(root)
    if delivered is not None:
        out = out.replace(_PLACEHOLDER.encode(), delivered)
    return out


@dataclass
class Queued:
    """One message waiting in an agent's queue: its id and its bytes (a SIF_Message)."""

    msg_id: str
    body: bytes
    object_name: str = ""
    packet: int = 0


def response_packets(agent: str, request_id: str, object_name: str, objects: list[bytes],
                     max_buffer: int, error: tuple[int, int, str] | None = None
                     ) -> list[Queued]:
    """The SIF_Response to one request, in packets that each fit max_buffer."""
    groups: list[list[bytes]] = [[]]
    size = PACKET_OVERHEAD
    for obj in objects:
        if groups[-1] and size + len(obj) > max_buffer:
            groups.append([])
            size = PACKET_OVERHEAD
        groups[-1].append(obj)
        size += len(obj)
    packets = []
    for number, group in enumerate(groups, start=1):
        root = ET.Element("SIF_Message", xmlns=NAMESPACE, Version="2.0r1")
        body = _sub(root, "SIF_Response")
        msg_id = _header(body, agent)
        _sub(body, "SIF_RequestMsgId", request_id)
        _sub(body, "SIF_PacketNumber", str(number))
        _sub(body, "SIF_MorePackets", "Yes" if number < len(groups) else "No")
        if error is not None:
            err = _sub(body, "SIF_Error")
            _sub(err, "SIF_Category", str(error[0]))
            _sub(err, "SIF_Code", str(error[1]))
            _sub(err, "SIF_Desc", error[2])
        else:
            _sub(body, "SIF_ObjectData", _PLACEHOLDER)
        out = ET.tostring(root, encoding="unicode").encode("utf-8")
        out = out.replace(_PLACEHOLDER.encode(), b"".join(group))
        packets.append(Queued(msg_id, out, object_name, number))
        if error is not None:
            break
    return packets


def hostile(kind: str, reply: bytes) -> bytes:
    """A whole reply made hostile: a DTD with an external entity (XXE) or nested entities
    (billion laughs) used in the first LocalId, or cut off in the middle of a tag."""
    real = reply.split(b"?>", 1)[1].lstrip() if reply.startswith(b"<?xml") else reply
    if kind == "xxe":
        return (b'<?xml version="1.0"?>\n<!DOCTYPE SIF_Message [<!ENTITY xxe SYSTEM "file://'
                + XXE_TARGET.encode() + b'">]>\n' + real.replace(b"<LocalId>", b"<LocalId>&xxe;",
                                                                  1))
    if kind == "billion-laughs":
        entities = b'<!ENTITY lol "lol">' + b"".join(
            b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
            for i in range(1, 10))
        return (b'<?xml version="1.0"?>\n<!DOCTYPE SIF_Message [' + entities + b"]>\n"
                + real.replace(b"<LocalId>", b"<LocalId>&lol9;", 1))
    if kind == "malformed":
        cut = reply.index(b"<LocalId>") + 5
        return reply[:cut] + b"</SIF_Message>"
    raise ValueError(kind)


@dataclass
class Agent:
    """What the zone knows of one registered agent."""

    max_buffer: int
    queue: deque[Queued] = field(default_factory=deque)


class Zone:
    """The zone's state: agents, their queues, the data, the fault, the journal."""

    def __init__(self, district: data.District, fault: str | None, journal: Path | None) -> None:
        self.district = district
        self.fault = fault
        self.journal = journal
        self.agents: dict[str, Agent] = {}
        self.lock = threading.Lock()
        self.cut_done = False
        self._objects: dict[str, list[bytes]] = {}

    def objects(self, name: str) -> list[bytes]:
        if name not in self._objects:
            self._objects[name] = data.objects(self.district, name)
        return self._objects[name]

    def log(self, **entry: Any) -> None:
        if self.journal is not None:
            with self.journal.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry, sort_keys=True) + "\n")

    def handle(self, body: bytes) -> tuple[bytes, bool]:
        """The reply to one message, and whether to cut the connection halfway through it."""
        try:
            root = fromstring(body, forbid_dtd=True)
        except Exception as exc:
            return ack("unknown", "", error=(1, 2, f"message is not well-formed: {exc}")), False
        kind_elem = next(iter(root), None)
        if _local(root.tag) != "SIF_Message" or kind_elem is None:
            return ack("unknown", "", error=(1, 3, "not a SIF_Message")), False
        kind = _local(kind_elem.tag)
        source = _text(kind_elem, "SIF_Header", "SIF_SourceId")
        msg_id = _text(kind_elem, "SIF_Header", "SIF_MsgId")
        with self.lock:
            return self._handle(kind, kind_elem, source, msg_id)

    def _handle(self, kind: str, elem: ET.Element, source: str, msg_id: str
                ) -> tuple[bytes, bool]:
        if kind == "SIF_Register":
            mode = _text(elem, "SIF_Mode")
            self.log(kind=kind, source=source, name=_text(elem, "SIF_Name"),
                     version=_text(elem, "SIF_Version"), mode=mode,
                     max_buffer=_text(elem, "SIF_MaxBufferSize"))
            if self.fault == "register-error":
                return ack(source, msg_id, error=(5, 1, "the zone refuses this agent")), False
            if mode != "Pull":
                return ack(source, msg_id, error=(5, 1, f"mode {mode} is not served")), False
            buffer = int(_text(elem, "SIF_MaxBufferSize") or "1000000")
            # Registering again updates the settings; the agent's queue is kept.
            self.agents.setdefault(source, Agent(buffer)).max_buffer = buffer
            return ack(source, msg_id), False
        agent = self.agents.get(source)
        if agent is None:
            return ack(source, msg_id, error=(4, 9, "the agent is not registered")), False
        if kind == "SIF_Request":
            query = _find(elem, "SIF_Query", "SIF_QueryObject")
            name = "" if query is None else query.get("ObjectName", "")
            self.log(kind=kind, source=source, object=name, msg_id=msg_id,
                     max_buffer=_text(elem, "SIF_MaxBufferSize"))
            try:
                objects = self.objects(name)
            except KeyError:
                return ack(source, msg_id, error=(8, 2, f"{name} is not provided")), False
            error = ((8, 1, f"the provider failed to answer the request for {name}")
                     if self.fault == "request-error" else None)
            if self.fault != "empty":
                agent.queue.extend(response_packets(source, msg_id, name, objects,
                                                    agent.max_buffer, error))
            return ack(source, msg_id), False
        if kind == "SIF_SystemControl":
            self.log(kind="SIF_GetMessage", source=source, queued=len(agent.queue))
            if self.fault == "sleeping":
                return ack(source, msg_id, code=8), False
            if not agent.queue:
                return ack(source, msg_id, code=9), False
            head = agent.queue[0]
            reply = ack(source, msg_id, delivered=head.body)
            cut = False
            if self.fault in ("malformed", "xxe", "billion-laughs"):
                reply = hostile(self.fault, reply)
            elif self.fault == "oversize":
                reply += b" " * OVERSIZE_PADDING  # whitespace after the root: still well-formed
            elif self.fault == "cut" and not self.cut_done:
                self.cut_done = cut = True
            self.log(kind="delivered", source=source, msg_id=head.msg_id,
                     object=head.object_name, packet=head.packet, bytes=len(reply))
            return reply, cut
        if kind == "SIF_Ack":
            original = _text(elem, "SIF_OriginalMsgId")
            self.log(kind=kind, source=source, original=original,
                     code=_text(elem, "SIF_Status", "SIF_Code"))
            if agent.queue and agent.queue[0].msg_id == original:
                agent.queue.popleft()
                return ack(source, msg_id), False
            return ack(source, msg_id, error=(12, 1, "no such message to acknowledge")), False
        return ack(source, msg_id, error=(12, 2, f"{kind} is not served here")), False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/xml;charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or "0")
        if length > MAX_REQUEST:
            self._send(413, b"")
            self.close_connection = True
            return
        body = self.rfile.read(length)
        basic = self.server.basic
        if basic is not None and self.headers.get("Authorization") != basic:
            self._send(401, b"", {"WWW-Authenticate": 'Basic realm="zone"'})
            return
        reply, cut = self.server.zone.handle(body)
        if cut:
            self.send_response(200)
            self.send_header("Content-Type", "application/xml;charset=utf-8")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply[: len(reply) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self._send(200, reply)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], zone: Zone, basic: str | None) -> None:
        super().__init__(address, _Handler)
        self.zone = zone
        self.basic = basic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, required=True,
                        help="written with the port once the zone listens")
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--client-ca", type=Path,
                        help="require a client certificate from this CA")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--fault", choices=FAULTS)
    parser.add_argument("--journal", type=Path)
    args = parser.parse_args(argv)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    if args.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(args.client_ca)
    basic = None
    if args.username is not None:
        basic = "Basic " + base64.b64encode(
            f"{args.username}:{args.password or ''}".encode()).decode()
    zone = Zone(data.make_district(args.students, args.seed), args.fault, args.journal)
    for name in ("SchoolInfo", "StudentPersonal", "StudentSchoolEnrollment", "StudentContact",
                 "StudentContactPersonal", "StudentContactRelationship", "StaffPersonal"):
        zone.objects(name)  # made before the zone says it listens: not in anyone's timing
    server = _Server(("127.0.0.1", args.port), zone, basic)
    server.socket = context.wrap_socket(server.socket, server_side=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    tmp = args.port_file.with_name(args.port_file.name + ".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.replace(args.port_file)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
