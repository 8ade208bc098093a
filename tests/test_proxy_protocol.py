"""The PROXY protocol parser (bytes in, result out) and the trusted forwarded fields' reading."""

from __future__ import annotations

import socket
import struct

import pytest

from ring3.handlers.forwarded import forwarded_client
from ring3.transport.addresses import AddressSet
from ring3.transport.proxy_protocol import V2_SIGNATURE, Malformed, ProxyHeader, parse


def v2(command: int = 1, family: int = 0x11, block: bytes = b"", length: int | None = None) -> bytes:
    size = len(block) if length is None else length
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", size) + block


def inet(src: str = "198.51.100.7", dst: str = "10.0.0.1", sport: int = 5555, dport: int = 80) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)


def inet6(src: str = "2001:db8::7", dst: str = "2001:db8::1") -> bytes:
    return (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!HH", 4711, 443))


def test_v1_tcp4_and_what_follows() -> None:
    line = b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\n"
    result = parse(line + b"GET / HTTP/1.1\r\n")
    assert result == ProxyHeader(length=len(line), version=1, local=False, family="TCP4",
                                 source=("192.0.2.1", 1234), destination=("192.0.2.2", 80))


def test_v1_tcp6_and_unknown() -> None:
    result = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 0 65535\r\n")
    assert isinstance(result, ProxyHeader) and result.source == ("2001:db8::1", 0)
    assert result.destination == ("2001:db8::2", 65535)
    unknown = parse(b"PROXY UNKNOWN ff:: 1.2.3.4 whatever\r\n")
    assert isinstance(unknown, ProxyHeader) and unknown.source is None and unknown.family == "UNKNOWN"


@pytest.mark.parametrize("cut", [1, 3, 6, 20, 39])
def test_v1_in_pieces_needs_more(cut: int) -> None:
    assert parse(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\n"[:cut]) is None


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 65536\r\n",  # port too big
    b"PROXY TCP4 192.0.2.1 192.0.2.2 -1 80\r\n",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 01 80\r\n",  # leading zero
    b"PROXY TCP4 192.0.2.1 192.0.2.2 x 80\r\n",
    b"PROXY TCP4 2001:db8::1 192.0.2.2 1 80\r\n",  # address of the other family
    b"PROXY TCP6 192.0.2.1 2001:db8::2 1 80\r\n",
    b"PROXY TCP4 192.0.2.300 192.0.2.2 1 80\r\n",
    b"PROXY TCP4 192.0.2.01 192.0.2.2 1 80\r\n",
    b"PROXY TCP6 fe80::1%eth0 2001:db8::2 1 80\r\n",
    b"PROXY TCP4  192.0.2.1 192.0.2.2 1 80\r\n",  # double space
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1 80 \r\n",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",
    b"PROXY UDP4 192.0.2.1 192.0.2.2 1 80\r\n",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1 80\n",  # LF alone
    b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n",  # longer than 107 bytes
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1 8\xc30\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # plain HTTP
    b"PRI * HTTP/2.0\r\n",
    b"\x16\x03\x01\x00",  # a TLS ClientHello
])
def test_v1_malformed(line: bytes) -> None:
    assert isinstance(parse(line), Malformed)


def test_v1_without_crlf_within_107_bytes() -> None:
    assert isinstance(parse(b"PROXY UNKNOWN " + b"x" * 93), Malformed)
    assert parse(b"PROXY UNKNOWN " + b"x" * 92) is None  # 106 bytes: the CRLF may still come


def test_v2_inet_inet6_and_tlvs() -> None:
    header = v2(block=inet())
    result = parse(header + b"GET")
    assert result == ProxyHeader(length=28, version=2, local=False, family="TCP4",
                                 source=("198.51.100.7", 5555), destination=("10.0.0.1", 80))
    tlv = b"\x04\x00\x03abc" + b"\x01\x00\x02h2"  # NOOP and ALPN: ignored
    result = parse(v2(family=0x21, block=inet6() + tlv))
    assert isinstance(result, ProxyHeader) and result.source == ("2001:db8::7", 4711)
    assert result.length == 16 + 36 + len(tlv)


def test_v2_local_unspec_and_unix_keep_the_real_peer() -> None:
    for header in (v2(command=0, family=0x00), v2(command=0, family=0x11, block=inet()),
                   v2(family=0x00), v2(family=0x31, block=b"\0" * 216)):
        result = parse(header)
        assert isinstance(result, ProxyHeader) and result.source is None, header
    local = parse(v2(command=0, family=0x00))
    assert isinstance(local, ProxyHeader) and local.local


@pytest.mark.parametrize("cut", [1, 12, 15, 16, 27])
def test_v2_in_pieces_needs_more(cut: int) -> None:
    assert parse(v2(block=inet())[:cut]) is None


@pytest.mark.parametrize("header", [
    b"\r\n\r\n\x00\r\nQUIX\n" + b"\x21\x11\x00\x0c" + inet(),  # bad signature
    b"\r\n\r\x00",
    V2_SIGNATURE + b"\x11\x11\x00\x0c" + inet(),  # version 1 in a v2 header
    V2_SIGNATURE + b"\x31\x11\x00\x0c" + inet(),  # version 3
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + inet(),  # command 2
    v2(family=0x11, block=inet()[:8]),  # AF_INET with 8 bytes
    v2(family=0x21, block=inet()),  # AF_INET6 with 12 bytes
    v2(family=0x31, block=b"\0" * 100),  # AF_UNIX short
    v2(family=0x12, block=inet()),  # DGRAM
    v2(family=0x10, block=inet()),  # transport UNSPEC with AF_INET
    v2(family=0x41, block=inet()),  # family 4
    v2(block=inet() + b"\x04\x00"),  # TLV cut short
    v2(block=inet() + b"\x04\x00\x09abc"),  # TLV longer than the header
])
def test_v2_malformed(header: bytes) -> None:
    assert isinstance(parse(header), Malformed)


def test_v2_declared_length_beyond_the_bytes_needs_more() -> None:
    assert parse(v2(block=inet(), length=500)) is None


TRUSTED = AddressSet(("10.0.0.0/8", "::1"))


@pytest.mark.parametrize(("fields", "expected"), [
    ([(b"x-forwarded-for", b"203.0.113.9")], (("203.0.113.9", 0), None)),
    ([(b"x-forwarded-for", b"1.1.1.1, 203.0.113.9, 10.0.0.5")], (("203.0.113.9", 0), None)),
    ([(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"10.0.0.5, 10.0.0.6")], (("1.1.1.1", 0), None)),
    ([(b"x-forwarded-for", b"10.0.0.7, 10.0.0.5")], (("10.0.0.7", 0), None)),  # all trusted: leftmost
    ([(b"x-forwarded-for", b"[2001:db8::5]:80")], (("2001:db8::5", 80), None)),
    ([(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-proto", b"https")], (("203.0.113.9", 0), "https")),
    ([(b"x-forwarded-proto", b"HTTPS")], (None, "https")),
    ([(b"forwarded", b'for="[2001:db8::1]:4711";proto=https, for=10.0.0.5')],
     (("2001:db8::1", 4711), "https")),
    ([(b"forwarded", b"for=192.0.2.60;proto=http;by=203.0.113.43"), (b"x-forwarded-for", b"1.2.3.4"),
      (b"x-forwarded-proto", b"https")], (("192.0.2.60", 0), "http")),  # Forwarded wins
    ([(b"forwarded", b'For="192.0.2.60:_abc"')], (("192.0.2.60", 0), None)),
])
def test_forwarded_fields(fields: list[tuple[bytes, bytes]], expected: object) -> None:
    assert forwarded_client(fields, TRUSTED) == expected


@pytest.mark.parametrize("fields", [
    [],
    [(b"x-forwarded-for", b"not-an-address")],
    [(b"x-forwarded-for", b"1.1.1.1,, 10.0.0.5")],
    [(b"x-forwarded-for", b"1.1.1.1, 10.0.0.300")],
    [(b"x-forwarded-for", b"1.1.1.1:99999")],
    [(b"x-forwarded-proto", b"gopher")],
    [(b"forwarded", b"for=unknown")],
    [(b"forwarded", b"for=_hidden, for=10.0.0.5")],
    [(b"forwarded", b"proto=https")],
    [(b"forwarded", b"for=1.2.3.4;;")],
    [(b"forwarded", b'for="1.2.3.4')],
    [(b"forwarded", b"for=1.2.3.4;for=5.6.7.8")],
    [(b"forwarded", b"garbage"), (b"x-forwarded-for", b"1.2.3.4")],  # a bad Forwarded is not replaced
])
def test_unusable_forwarded_fields_are_ignored(fields: list[tuple[bytes, bytes]]) -> None:
    assert forwarded_client(fields, TRUSTED) is None
