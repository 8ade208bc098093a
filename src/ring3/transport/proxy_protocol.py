"""The PROXY protocol header (HAProxy's doc/proxy-protocol.txt), versions 1 and 2, sans-IO.

A load balancer sends it first on a connection, before any byte of the client's, to say whom the
connection is really from. `parse(data)` takes the bytes received so far and answers None (not enough
yet), a ProxyHeader (its `length` bytes are the header; what follows is the client's), or a Malformed
with the reason. No sockets, no clocks.

v1 is one text line: "PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n" or "PROXY UNKNOWN ...\\r\\n", 107 bytes
at most, fields separated by single spaces. v2 is binary: a 12-byte signature, version and command,
family and transport, a 2-byte length, then the addresses and TLVs (type-length-value extensions, which
are length-checked and otherwise ignored). A LOCAL command (HAProxy's health checks), v1's UNKNOWN and
v2's UNSPEC or AF_UNIX family carry no usable address: the connection keeps its real endpoints.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (spec 2.1)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, length
V2_MAX = V2_FIXED + 0xFFFF
# v2 families (high nibble of byte 13) and the bytes of their address block.
_INET, _INET6, _UNIX = 0x1, 0x2, 0x3
_ADDRESS_BYTES = {0x0: 0, _INET: 12, _INET6: 36, _UNIX: 216}
_FAMILY_NAMES = {0x0: "UNSPEC", _INET: "TCP4", _INET6: "TCP6", _UNIX: "UNIX"}
_STREAM = 0x1
_LOCAL, _PROXY = 0x0, 0x1

Address = tuple[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyHeader:
    """A whole, valid header. `source` and `destination` are None when the connection keeps its real
    endpoints (LOCAL, UNKNOWN, UNSPEC, AF_UNIX)."""

    length: int  # bytes of the header; the client's bytes start after them
    version: int  # 1 or 2
    local: bool  # v2's LOCAL command: the balancer's own connection (a health check)
    family: str  # "TCP4", "TCP6", "UNKNOWN" (v1), "UNSPEC" or "UNIX" (v2)
    source: Address | None = None
    destination: Address | None = None


@dataclass(frozen=True, slots=True)
class Malformed:
    """Not a valid PROXY header; `reason` says why, for one log line."""

    reason: str


Result = ProxyHeader | Malformed | None


def parse(data: bytes) -> Result:
    """The header at the start of `data`, None while it may still become one, or Malformed."""
    if data[:1] == b"P":
        if not V1_PREFIX.startswith(data[:6]):
            return Malformed("neither a PROXY v1 line nor a v2 signature")
        return _parse_v1(data)
    if data[:1] == b"\r":
        if not V2_SIGNATURE.startswith(data[:12]):
            return Malformed("bad PROXY v2 signature")
        return _parse_v2(data)
    if not data:
        return None
    return Malformed("no PROXY protocol header")


# -- version 1 ------------------------------------------------------------------------------------

def _parse_v1(data: bytes) -> Result:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data[:V1_MAX]:
            return Malformed("PROXY v1 line longer than 107 bytes or without CRLF")
        return None
    line = data[:end]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return Malformed("PROXY v1 line is not ASCII")
    fields = text.split(" ")
    length = end + 2
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(length=length, version=1, local=False, family="UNKNOWN")
    if len(fields) != 6:
        return Malformed("PROXY v1 line needs 6 fields separated by single spaces")
    _, family, source, destination, source_port, destination_port = fields
    if family not in ("TCP4", "TCP6"):
        return Malformed(f"PROXY v1 protocol {family[:8]!r} is not TCP4, TCP6 or UNKNOWN")
    version = 4 if family == "TCP4" else 6
    src, dst = _v1_address(source, version), _v1_address(destination, version)
    if src is None or dst is None:
        return Malformed(f"PROXY v1 address not valid for {family}")
    sport, dport = _v1_port(source_port), _v1_port(destination_port)
    if sport is None or dport is None:
        return Malformed("PROXY v1 port not a number from 0 to 65535")
    return ProxyHeader(length=length, version=1, local=False, family=family,
                       source=(src, sport), destination=(dst, dport))


def _v1_address(text: str, version: int) -> str | None:
    try:
        address = ipaddress.ip_address(text)  # refuses IPv4's leading zeros; an IPv6 zone id passes it
    except ValueError:
        return None
    if address.version != version or "%" in text:
        return None
    return str(address)


def _v1_port(text: str) -> int | None:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or (text[0] == "0" and text != "0"):
        return None
    port = int(text)
    return port if port <= 0xFFFF else None


# -- version 2 ------------------------------------------------------------------------------------

def _parse_v2(data: bytes) -> Result:
    if len(data) < V2_FIXED:
        return None
    version, command = data[12] >> 4, data[12] & 0xF
    if version != 2:
        return Malformed(f"PROXY v2 header with version {version}")
    if command not in (_LOCAL, _PROXY):
        return Malformed(f"PROXY v2 command {command} is neither LOCAL nor PROXY")
    block = int.from_bytes(data[14:16], "big")
    length = V2_FIXED + block
    if len(data) < length:
        return None
    family, transport = data[13] >> 4, data[13] & 0xF
    if command == _LOCAL:  # the family and addresses are to be ignored (spec 2.2)
        return ProxyHeader(length=length, version=2, local=True, family=_FAMILY_NAMES.get(family, "UNSPEC"))
    needed = _ADDRESS_BYTES.get(family)
    if needed is None:
        return Malformed(f"PROXY v2 family {family} unknown")
    if family != 0 and transport != _STREAM:
        return Malformed("PROXY v2 transport is not STREAM")
    if block < needed:
        return Malformed(f"PROXY v2 length {block} too short for {_FAMILY_NAMES[family]} addresses")
    reason = _check_tlvs(data[V2_FIXED + needed:length])
    if reason:
        return Malformed(reason)
    name = _FAMILY_NAMES[family]
    if family not in (_INET, _INET6):
        return ProxyHeader(length=length, version=2, local=False, family=name)
    size = 4 if family == _INET else 16
    at = V2_FIXED
    src = str(ipaddress.ip_address(data[at:at + size]))
    dst = str(ipaddress.ip_address(data[at + size:at + 2 * size]))
    ports = at + 2 * size
    sport = int.from_bytes(data[ports:ports + 2], "big")
    dport = int.from_bytes(data[ports + 2:ports + 4], "big")
    return ProxyHeader(length=length, version=2, local=False, family=name,
                       source=(src, sport), destination=(dst, dport))


def _check_tlvs(tlvs: bytes) -> str | None:
    """Each TLV (1-byte type, 2-byte length, value) must fit in the block exactly."""
    at = 0
    while at < len(tlvs):
        if at + 3 > len(tlvs):
            return "PROXY v2 TLV cut short"
        at += 3 + int.from_bytes(tlvs[at + 1:at + 3], "big")
        if at > len(tlvs):
            return "PROXY v2 TLV longer than the header"
    return None
