"""The one HL7 v2 text layer: character sets (MSH-18), byte-order mark, delimiters and escapes."""

from __future__ import annotations

import pytest

from hub.errors import MappingError, ParseError
from mappings.hl7v2.ack import build_ack
from mappings.hl7v2.er7 import (
    BOM,
    Delimiters,
    Er7Message,
    check_header,
    codec_for,
    declared_charset,
    decode_er7,
    encode_er7,
    escape,
    read_header,
    unescape,
)
from mappings.hl7v2.reader import Hl7v2Text, read_hl7v2_metadata

NAME = "NOËL^HÉLÈNE"


def message(charset: str, *, name: str = NAME, delimiters: str = "|^~\\&", big: int = 0) -> str:
    fs, cs = delimiters[0], delimiters[1]
    msh = fs.join(["MSH", delimiters[1:], "GAM", "HOSP", "HUB", "HOSP", "20250101", "", f"ADT{cs}A28{cs}ADT_A05",
                   "C1", "P", "2.5", "", "", "", "", "FRA", charset])  # fmt: skip
    segs = [msh, f"PID{fs}1{fs}{fs}IPP1{cs}{cs}{cs}HOSP{cs}PI{fs}{fs}{name.replace('^', cs)}"]
    if big:
        segs.append(f"OBX{fs}1{fs}ED{fs}X{fs}{fs}{cs}text{cs}XML{cs}Base64{cs}{'A' * big}")
    return "\r".join(segs) + "\r"


@pytest.mark.parametrize(
    ("charset", "codec"),
    [("8859/1", "latin-1"), ("UNICODE UTF-8", "utf-8"), ("8859/15", "iso8859-15"), ("8859/9", "iso8859-9"),
     ("unicode  utf-8", "utf-8"), ("UTF-8", "utf-8")],
)  # fmt: skip
def test_body_is_decoded_with_its_declared_charset(charset: str, codec: str) -> None:
    body = message(charset).encode(codec)
    text, used = decode_er7(body)
    assert used == codec and NAME in text
    msg = Er7Message(body)
    assert (msg.value("PID", 5), msg.value("PID", 5, 2)) == ("NOËL", "HÉLÈNE")
    assert msg.codec == codec


def test_table_0211_sets_map_to_codecs() -> None:
    assert codec_for("ASCII") == "ascii" and codec_for("8859/9") == "iso8859-9"
    assert codec_for("GB 18030-2000") == "gb18030" and codec_for("BIG-5") == "big5"
    assert codec_for("ISO IR87") is None and codec_for("EBCDIC") is None  # ISO 2022 sets: not one codec


def test_undeclared_charset_is_utf8_else_latin1() -> None:
    assert decode_er7(message("").encode("utf-8"))[1] == "utf-8"
    text, codec = decode_er7(message("").encode("latin-1"))
    assert codec == "latin-1" and NAME in text


@pytest.mark.parametrize(
    ("charset", "body_codec", "code"),
    [("UNICODE UTF-8", "latin-1", "102"), ("ASCII", "utf-8", "102"), ("EBCDIC", "utf-8", "103")],
)
def test_violated_or_unknown_charset_is_refused_at_msh18(charset: str, body_codec: str, code: str) -> None:
    body = message(charset).encode(body_codec)
    with pytest.raises(ParseError) as strict:
        Er7Message(body)
    assert strict.value.location == "MSH^1^18" and strict.value.code == code
    # The listener's path still reads MSH (to echo it in the AR), then refuses at check_header.
    msg, header = read_header(body)
    assert header.control_id == "C1"
    with pytest.raises(ParseError) as late:
        check_header(msg, header)
    assert late.value.location == "MSH^1^18" and late.value.code == code


def test_large_message_is_checked_whole_against_its_charset() -> None:
    # Over the head-scan size, only MSH..PID is decoded on the hot path; the rest is checked as bytes.
    ok = message("8859/1", big=100_000).encode("latin-1")
    msg, header = read_header(ok)
    check_header(msg, header)
    assert header.codec == "latin-1" and msg.value("PID", 5) == "NOËL"
    bad = (message("UNICODE UTF-8", name="A^B", big=100_000)[:-1] + "é\r").encode("latin-1")
    msg, header = read_header(bad)
    with pytest.raises(ParseError) as exc:
        check_header(msg, header)
    assert exc.value.location == "MSH^1^18"
    undeclared = (message("", name="A^B", big=100_000)[:-1] + "é\r").encode("latin-1")
    msg, header = read_header(undeclared)
    check_header(msg, header)
    assert header.codec == "latin-1"


@pytest.mark.parametrize("big", [0, 100_000])
def test_bom_before_msh_is_skipped_and_reported(big: int) -> None:
    body = BOM + message("UNICODE UTF-8", big=big).encode("utf-8")
    msg, header = read_header(body)
    check_header(msg, header)
    assert msg.bom and header.bom and header.metadata()["bom"] == "utf-8"
    assert read_hl7v2_metadata(body)["bom"] == "utf-8"
    assert msg.value("PID", 5) == "NOËL"
    assert declared_charset(body) == "UNICODE UTF-8"
    plain = message("UNICODE UTF-8").encode()
    assert "bom" not in read_hl7v2_metadata(plain)


def test_encoding_characters_come_from_msh() -> None:
    body = message("8859/1", delimiters="#$*!@", name="D!F!ARC$HÉLÈNE").encode("latin-1")
    msg = Er7Message(body)
    assert msg.delimiters == Delimiters("#", "$", "*", "!", "@")
    assert msg.value("PID", 5) == "D#ARC" and msg.value("PID", 5, 2) == "HÉLÈNE"
    assert declared_charset(body) == "8859/1"


@pytest.mark.parametrize("delimiters", [Delimiters(), Delimiters("#", "$", "*", "!", "@")])
def test_escape_round_trips(delimiters: Delimiters) -> None:
    d = delimiters
    value = f"a{d.field}b{d.component}c{d.subcomponent}d{d.repetition}e{d.escape}f\rg\nh NOËL"
    escaped = escape(value, d)
    assert not any(ch in escaped for ch in (d.field, d.component, d.subcomponent, d.repetition, "\r", "\n"))
    assert unescape(escaped, d) == value


def test_hex_escape_is_read_in_the_message_charset() -> None:
    d = Delimiters()
    assert unescape("\\XC3A9\\", d, codec="utf-8") == "é"
    assert unescape("\\XE9\\", d, codec="latin-1") == "é"
    text = message("UNICODE UTF-8", name="NO\\XC38B\\L^X")
    assert Er7Message(text.encode()).value("PID", 5) == "NOËL"


def test_formatting_commands_become_plain_text_only_when_asked() -> None:
    d = Delimiters()
    ft = "Ligne 1\\.br\\Ligne 2\\.sp 2\\\\H\\fin\\N\\\\.in+4\\"
    assert unescape(ft, d) == ft  # kept as written for a caller that renders them
    assert unescape(ft, d, formatting=True) == "Ligne 1\nLigne 2\n\nfin"
    assert unescape("\\Zlocal\\ \\C2842\\", d, formatting=True) == "\\Zlocal\\ \\C2842\\"
    msg = Er7Message(message("UNICODE UTF-8", name="A^B").encode())
    assert msg.text("a\\.br\\b\\T\\c") == "a\nb&c"


def test_outbound_text_is_encoded_in_the_declared_charset() -> None:
    assert encode_er7("NOËL", "latin-1") == b"NO\xcbL"
    with pytest.raises(MappingError) as exc:
        encode_er7("Œuvre 北", "latin-1")
    assert exc.value.location == "MSH^1^18"


def test_ack_declares_and_uses_the_senders_charset() -> None:
    body = message("8859/1").replace("|C1|", "|CÉ1|").encode("latin-1")
    _, header = read_header(body)
    ack = build_ack(header, "AA")
    assert b"|C\xc91" in ack  # MSA-2 in the sender's bytes
    parsed = Er7Message(ack)
    assert parsed.value("MSH", 18) == "8859/1" and parsed.value("MSA", 2) == "CÉ1" and parsed.codec == "latin-1"
    utf8 = build_ack(read_header(message("UNICODE UTF-8").replace("|C1|", "|CÉ1|").encode())[1], "AA")
    assert "|CÉ1".encode() in utf8
    # A set the hub cannot write is not declared by the AR that refuses it.
    refusal = build_ack(read_header(message("EBCDIC").encode())[1], "AR", error_code="103")
    assert Er7Message(refusal).value("MSH", 18) == "" and b"EBCDIC" not in refusal


def test_text_codec_for_the_admin_api_keeps_the_declared_charset() -> None:
    body = message("8859/1").encode("latin-1")
    charset, text = Hl7v2Text.decode(body)
    assert charset == "latin-1" and NAME in text
    assert Hl7v2Text.encode(text) == body
