"""Reading the zone's replies: the bounds and the reasons, on hand-written SIF messages."""

from __future__ import annotations

import pytest

from sftpd.sif import messages
from sftpd.sif.errors import PullError, PullReason

NS = messages.NAMESPACE


def ack(inner: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><SIF_Message xmlns="{NS}" Version="2.0r1">'
            f"<SIF_Ack><SIF_Header><SIF_MsgId>A1</SIF_MsgId><SIF_SourceId>zis</SIF_SourceId>"
            f"</SIF_Header><SIF_OriginalSourceId>agent</SIF_OriginalSourceId>"
            f"<SIF_OriginalMsgId>M1</SIF_OriginalMsgId>{inner}</SIF_Ack></SIF_Message>"
            ).encode()


def test_an_empty_queue_is_status_9() -> None:
    reply = messages.read_reply(ack("<SIF_Status><SIF_Code>9</SIF_Code></SIF_Status>"))
    assert (reply.kind, reply.original_msg_id, reply.status_code, reply.delivered) == (
        "SIF_Ack", "M1", 9, None)


@pytest.mark.parametrize(("category", "reason"), [
    (3, PullReason.ACCESS_DENIED), (4, PullReason.ACCESS_DENIED),
    (5, PullReason.REGISTRATION_REFUSED), (8, PullReason.REQUEST_REFUSED),
    (11, PullReason.ZONE_ERROR)])
def test_a_sif_error_becomes_a_typed_reason(category: int, reason: PullReason) -> None:
    reply = messages.read_reply(ack(
        f"<SIF_Error><SIF_Category>{category}</SIF_Category><SIF_Code>2</SIF_Code>"
        "<SIF_Desc>Invalid object</SIF_Desc><SIF_ExtendedDesc>Grades</SIF_ExtendedDesc>"
        "</SIF_Error>"))
    assert reply.error is not None
    failure = reply.error.failure("SIF_Request for Grades")
    assert failure.reason is reason
    assert failure.message == (
        f"SIF_Request for Grades: SIF_Error category {category} "
        f"({messages.ERROR_CATEGORIES[category]}) code 2: Invalid object (Grades)")


def test_objects_stream_one_at_a_time_without_their_namespace() -> None:
    delivered = (
        "<SIF_Status><SIF_Code>0</SIF_Code><SIF_Data>"
        f'<SIF_Message xmlns="{NS}" Version="2.0r1"><SIF_Response><SIF_Header>'
        "<SIF_MsgId>R1</SIF_MsgId><SIF_SourceId>sis</SIF_SourceId></SIF_Header>"
        "<SIF_RequestMsgId>Q1</SIF_RequestMsgId><SIF_PacketNumber>2</SIF_PacketNumber>"
        "<SIF_MorePackets>Yes</SIF_MorePackets><SIF_ObjectData>"
        + "".join(f'<SchoolInfo RefId="S{i}"><SchoolName>École {i}</SchoolName></SchoolInfo>'
                  for i in range(3))
        + "</SIF_ObjectData></SIF_Response></SIF_Message></SIF_Data></SIF_Status>")
    seen: list[tuple[str, str, str | None]] = []
    reply = messages.read_reply(ack(delivered), lambda d: d.request_msg_id == "Q1",
                                lambda name, e: seen.append((name, e.get("RefId", ""),
                                                             e.findtext("SchoolName"))))
    assert seen == [("SchoolInfo", f"S{i}", f"École {i}") for i in range(3)]
    d = reply.delivered
    assert d is not None
    assert (d.kind, d.msg_id, d.source_id, d.packet_number, d.more_packets) == (
        "SIF_Response", "R1", "sis", 2, True)
    assert dict(d.objects) == {"SchoolInfo": 3}


def test_unwanted_objects_are_counted_not_handed_on() -> None:
    delivered = ("<SIF_Status><SIF_Code>0</SIF_Code><SIF_Data><SIF_Message><SIF_Response>"
                 "<SIF_RequestMsgId>OLD</SIF_RequestMsgId><SIF_ObjectData><SchoolInfo>"
                 "<SchoolName>x</SchoolName></SchoolInfo></SIF_ObjectData></SIF_Response>"
                 "</SIF_Message></SIF_Data></SIF_Status>")
    seen: list[str] = []
    reply = messages.read_reply(ack(delivered), lambda d: False,
                                lambda name, e: seen.append(name))
    assert seen == []
    assert reply.delivered is not None and reply.delivered.objects["SchoolInfo"] == 1


@pytest.mark.parametrize(("body", "reason", "words"), [
    (b"<a>" * 100 + b"</a>" * 100, PullReason.PROTOCOL_ERROR, "not a SIF_Message"),
    (b"<SIF_Message>" + b"<a>" * 60 + b"</a>" * 60 + b"</SIF_Message>",
     PullReason.MALFORMED_XML, "nests deeper than 48"),
    (b"<SIF_Message><SIF_Ack></SIF_Message>", PullReason.MALFORMED_XML, "line 1, column"),
    (b'<!DOCTYPE SIF_Message [<!ENTITY e SYSTEM "file:///etc/passwd">]><SIF_Message>&e;'
     b"</SIF_Message>", PullReason.UNSAFE_XML, "refused unread"),
    (b"<SIF_Message/>", PullReason.PROTOCOL_ERROR, "empty SIF_Message"),
    (b"\xff\xfe<SIF_Message/>", PullReason.MALFORMED_XML, "not well-formed"),
])
def test_hostile_or_broken_replies(body: bytes, reason: PullReason, words: str) -> None:
    with pytest.raises(PullError) as caught:
        messages.read_reply(body)
    assert caught.value.reason is reason
    assert words in caught.value.message
