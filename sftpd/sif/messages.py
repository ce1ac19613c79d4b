"""SIF 2.x infrastructure messages: build the agent's, read the zone's replies as a stream.

Built with ElementTree, read with defusedxml's parser, which refuses a DTD, any entity
declaration and any external reference before expanding anything (XXE, billion laughs); the
reply's size is bounded by the transport and its nesting here. Data objects inside a delivered
SIF_Response are handed one at a time to a callback and then dropped, so a packet of ten
megabytes never stands as one tree.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from sftpd.sif.errors import PullError, PullReason

NAMESPACE: Final = "http://www.sifinfo.org/infrastructure/2.x"
VERSION: Final = "2.0r1"
# What the agent accepts from the zone (SIF_Request/SIF_Version): any 2.x.
ACCEPTED_VERSIONS: Final = "2.*"
MODE_PULL: Final = "Pull"
# Deeper than any SIF 2.x message with its objects (about 15 levels); a deeper one is refused.
MAX_DEPTH: Final = 48

# SIF_Status/SIF_Code (Implementation Specification, Appendix B: Status Code).
STATUS_SUCCESS: Final = 0  # the ZIS accepted; SIF_Data may hold the delivered message
STATUS_IMMEDIATE: Final = 1  # agent: done with the delivered message, discard it
STATUS_ALREADY_HAVE: Final = 7
STATUS_SLEEPING: Final = 8
STATUS_NO_MESSAGES: Final = 9

# SIF_Error/SIF_Category (Appendix B: Error Category).
ERROR_CATEGORIES: Final[dict[int, str]] = {
    0: "Unknown", 1: "XML Validation", 2: "Encryption", 3: "Authentication",
    4: "Access and Permissions", 5: "Registration", 6: "Provision", 7: "Subscription",
    8: "Request and Response", 9: "Event Reporting and Processing", 10: "Transport",
    11: "System", 12: "Generic Message Handling", 13: "SMB Handling", 14: "SIF Zone Service"}
_CATEGORY_REASONS: Final = {3: PullReason.ACCESS_DENIED, 4: PullReason.ACCESS_DENIED,
                            5: PullReason.REGISTRATION_REFUSED, 8: PullReason.REQUEST_REFUSED}


def new_msg_id() -> str:
    """A SIF_MsgId: a GUID as 32 upper-case hexadecimal digits."""
    return uuid.uuid4().hex.upper()


def _sub(parent: ET.Element, tag: str, text: str | None = None,
         attrs: dict[str, str] | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs or {})
    if text is not None:
        child.text = text
    return child


@dataclass(frozen=True)
class Outgoing:
    """One message the agent sends: its SIF_MsgId and its bytes."""

    msg_id: str
    body: bytes


def _message(kind: str, source_id: str, fill: Callable[[ET.Element], None],
             now: datetime | None = None) -> Outgoing:
    root = ET.Element("SIF_Message", {"xmlns": NAMESPACE, "Version": VERSION})
    body = _sub(root, kind)
    header = _sub(body, "SIF_Header")
    msg_id = new_msg_id()
    _sub(header, "SIF_MsgId", msg_id)
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    _sub(header, "SIF_Timestamp", moment.isoformat(timespec="seconds"))
    _sub(header, "SIF_SourceId", source_id)
    fill(body)
    return Outgoing(msg_id, ET.tostring(root, encoding="utf-8", xml_declaration=True))


def register(source_id: str, max_buffer_size: int) -> Outgoing:
    """SIF_Register: the agent's name (its SIF_SourceId), version 2.0r1, its buffer, Pull."""
    def fill(body: ET.Element) -> None:
        _sub(body, "SIF_Name", source_id)
        _sub(body, "SIF_Version", VERSION)
        _sub(body, "SIF_MaxBufferSize", str(max_buffer_size))
        _sub(body, "SIF_Mode", MODE_PULL)
    return _message("SIF_Register", source_id, fill)


def request(source_id: str, object_name: str, max_buffer_size: int) -> Outgoing:
    """SIF_Request for every object of one kind (a query naming only the object)."""
    def fill(body: ET.Element) -> None:
        _sub(body, "SIF_Version", ACCEPTED_VERSIONS)
        _sub(body, "SIF_MaxBufferSize", str(max_buffer_size))
        query = _sub(body, "SIF_Query")
        _sub(query, "SIF_QueryObject", attrs={"ObjectName": object_name})
    return _message("SIF_Request", source_id, fill)


def get_message(source_id: str) -> Outgoing:
    """SIF_SystemControl/SIF_GetMessage: the next message in the agent's queue, if any."""
    def fill(body: ET.Element) -> None:
        _sub(_sub(body, "SIF_SystemControlData"), "SIF_GetMessage")
    return _message("SIF_SystemControl", source_id, fill)


def ack(source_id: str, original_source_id: str, original_msg_id: str) -> Outgoing:
    """SIF_Ack of a delivered message with status 1 (immediate): the ZIS may discard it."""
    def fill(body: ET.Element) -> None:
        _sub(body, "SIF_OriginalSourceId", original_source_id)
        _sub(body, "SIF_OriginalMsgId", original_msg_id)
        _sub(_sub(body, "SIF_Status"), "SIF_Code", str(STATUS_IMMEDIATE))
    return _message("SIF_Ack", source_id, fill)


@dataclass
class SifErrorInfo:
    """A SIF_Error: category and code (Appendix B), description, extended description."""

    category: int = 0
    code: int = 0
    desc: str = ""
    extended: str = ""

    def failure(self, where: str) -> PullError:
        name = ERROR_CATEGORIES.get(self.category, "unknown category")
        text = f"{where}: SIF_Error category {self.category} ({name}) code {self.code}"
        if self.desc:
            text += f": {self.desc}"
        if self.extended:
            text += f" ({self.extended})"
        return PullError(_CATEGORY_REASONS.get(self.category, PullReason.ZONE_ERROR), text)


@dataclass
class Delivered:
    """The message a SIF_GetMessage reply delivered (inside SIF_Ack/SIF_Status/SIF_Data)."""

    kind: str = ""  # SIF_Response, SIF_Event, ...
    msg_id: str = ""
    source_id: str = ""
    request_msg_id: str = ""
    packet_number: int = 0
    more_packets: bool | None = None
    error: SifErrorInfo | None = None
    objects: Counter[str] = field(default_factory=Counter)


@dataclass
class Reply:
    """The zone's reply to one message: a SIF_Ack with a status or an error."""

    kind: str = ""
    original_msg_id: str = ""
    status_code: int | None = None
    status_desc: str = ""
    error: SifErrorInfo | None = None
    delivered: Delivered | None = None


# Decides, once per delivered message at its first object, whether its objects are wanted.
Accept = Callable[[Delivered], bool]
# Receives each wanted object: its name (namespace removed from every tag) and its element.
OnObject = Callable[[str, ET.Element], None]

_ACK: Final = ("SIF_Message", "SIF_Ack")
_STATUS: Final = (*_ACK, "SIF_Status")
_DATA: Final = (*_STATUS, "SIF_Data", "SIF_Message")
# The depth of a data object: SIF_Message/SIF_Ack/.../SIF_Response/SIF_ObjectData/<object>.
_OBJECT_DEPTH: Final = len(_DATA) + 3
_ERROR_FIELDS: Final = {"SIF_Category": "category", "SIF_Code": "code", "SIF_Desc": "desc",
                        "SIF_ExtendedDesc": "extended"}


def _number(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise PullError(PullReason.PROTOCOL_ERROR, f"{what} is not a number: {text[:40]!r}"
                        ) from None


def _set_error(error: SifErrorInfo, tag: str, text: str) -> None:
    name = _ERROR_FIELDS.get(tag)
    if name in ("category", "code"):
        setattr(error, name, _number(text, f"SIF_Error/{tag}"))
    elif name is not None:
        setattr(error, name, text[:1000])


def _attributes(ordered: list[str]) -> dict[str, str]:
    """expat's ordered attributes (name, value, name, value, ...) as a dict."""
    return dict(zip(ordered[::2], ordered[1::2], strict=True))


class _Reader:
    """The parser's target: follows the path, keeps the envelope's few values, builds each
    wanted data object as its own small tree and hands it on (one object in memory at once)."""

    def __init__(self, accept: Accept, on_object: OnObject) -> None:
        self.accept = accept
        self.on_object = on_object
        self.reply = Reply()
        self.wanted: bool | None = None
        self.depth = 0
        self.path: list[str] = []  # down to the data object, not into it
        self.text: list[str] = []
        self.builder: ET.TreeBuilder | None = None  # inside a data object
        self.skipping = False  # inside a data object that is not wanted

    def start(self, tag: str, attributes: list[str]) -> None:
        """expat's start handler (ordered attributes: name, value, name, value, ...)."""
        self.depth = depth = self.depth + 1
        if depth > MAX_DEPTH:
            raise PullError(PullReason.MALFORMED_XML,
                            f"the reply nests deeper than {MAX_DEPTH} elements")
        builder = self.builder
        if builder is not None:  # the hot path: the parts of a data object
            builder.start(tag[tag.find("}") + 1:], _attributes(attributes) if attributes
                          else {})
            return
        if self.skipping:
            return
        local = tag[tag.find("}") + 1:]
        path = self.path
        path.append(local)
        if self.depth == _OBJECT_DEPTH and path[-2] == "SIF_ObjectData" and \
                tuple(path[:len(_DATA)]) == _DATA:
            d = self._current()
            if self.wanted is None:
                self.wanted = self.accept(d)
            d.objects[local] += 1
            if self.wanted:
                self.builder = ET.TreeBuilder()
                self.builder.start(local, _attributes(attributes))
            else:
                self.skipping = True
        elif self.depth == 1 and local != "SIF_Message":
            raise PullError(PullReason.PROTOCOL_ERROR,
                            f"the reply is a <{local[:60]}>, not a SIF_Message")
        else:
            self.text = []

    def data(self, text: str) -> None:
        if self.builder is not None:
            self.builder.data(text)
        elif not self.skipping:
            self.text.append(text)

    def end(self, tag: str) -> None:
        depth = self.depth
        self.depth -= 1
        if self.builder is not None:
            self.builder.end(tag)
            if depth == _OBJECT_DEPTH:
                elem = self.builder.close()
                self.builder = None
                self.on_object(self.path.pop(), elem)
            return
        if self.skipping:
            if depth == _OBJECT_DEPTH:
                self.skipping = False
                self.path.pop()
            return
        self._envelope(self.path, "".join(self.text))
        self.text = []
        self.path.pop()

    def close(self) -> Reply:
        return self.reply

    def _current(self) -> Delivered:
        d = self.reply.delivered = self.reply.delivered or Delivered()
        d.kind = self.path[len(_DATA)]  # known from its first part on, so before its objects
        return d

    def _envelope(self, path: list[str], text: str) -> None:
        depth = len(path)
        tag = path[-1]
        if depth == 2:
            self.reply.kind = tag
        elif depth == 3 and path[1] == "SIF_Ack" and tag == "SIF_OriginalMsgId":
            self.reply.original_msg_id = text.strip()
        elif depth == 4 and tuple(path[:3]) == _STATUS:
            if tag == "SIF_Code":
                self.reply.status_code = _number(text, "SIF_Status/SIF_Code")
            elif tag == "SIF_Desc":
                self.reply.status_desc = text[:1000]
        elif depth == 4 and tuple(path[:3]) == (*_ACK, "SIF_Error"):
            self.reply.error = self.reply.error or SifErrorInfo()
            _set_error(self.reply.error, tag, text)
        elif depth > len(_DATA) and tuple(path[:len(_DATA)]) == _DATA:
            self._delivered(path[len(_DATA):], text)

    def _delivered(self, inner: list[str], text: str) -> None:
        d = self._current()
        if len(inner) == 3 and inner[1] == "SIF_Header":
            if inner[2] == "SIF_MsgId":
                d.msg_id = text.strip()
            elif inner[2] == "SIF_SourceId":
                d.source_id = text.strip()
        elif len(inner) == 2:
            if inner[1] == "SIF_RequestMsgId":
                d.request_msg_id = text.strip()
            elif inner[1] == "SIF_PacketNumber":
                d.packet_number = _number(text, "SIF_PacketNumber")
            elif inner[1] == "SIF_MorePackets":
                if text.strip() not in ("Yes", "No"):
                    raise PullError(PullReason.PROTOCOL_ERROR,
                                    f"SIF_MorePackets is {text[:20]!r}, not Yes or No")
                d.more_packets = text.strip() == "Yes"
        elif len(inner) == 3 and inner[1] == "SIF_Error":
            d.error = d.error or SifErrorInfo()
            _set_error(d.error, inner[2], text)


def read_reply(data: bytes, accept: Accept | None = None,
               on_object: OnObject | None = None) -> Reply:
    """Read the zone's reply (a SIF_Message holding a SIF_Ack), streaming its objects.

    PullError: UnsafeXml for a DTD, an entity or an external reference; MalformedXml for a
    document that is not well-formed or nests deeper than MAX_DEPTH; ProtocolError for one
    that is not a SIF_Message.
    """
    reader = _Reader(accept or (lambda _d: False), on_object or (lambda _n, _e: None))
    parser = DefusedXMLParser(target=reader, forbid_dtd=True, forbid_entities=True,
                              forbid_external=True)
    # Elements go from expat straight to the reader. defusedxml builds on ElementTree's
    # pure-Python parser so as to hook its refusals into expat; those are expat handlers of
    # their own (DOCTYPE, entity declarations, external references) and stay in place, while
    # ElementTree's per-element Python handlers in between would cost a call per element.
    expat = parser.parser
    expat.StartElementHandler = reader.start
    expat.EndElementHandler = reader.end
    expat.CharacterDataHandler = reader.data
    try:
        parser.feed(data)
        parser.close()
    except DefusedXmlException as exc:
        raise PullError(PullReason.UNSAFE_XML,
                        f"the reply was refused unread: {exc} (DTDs, entities and external "
                        "references are never accepted)") from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise PullError(PullReason.MALFORMED_XML,
                        f"the reply is not well-formed XML (line {line}, column {column}): "
                        f"{exc}") from None
    if not reader.reply.kind:
        raise PullError(PullReason.PROTOCOL_ERROR, "the reply is an empty SIF_Message")
    return reader.reply
