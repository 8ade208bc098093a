"""HPACK (RFC 7541) for a server: a decoder with its dynamic table, and a stateless encoder.

The decoder is ring3's own, for speed: a header block that does not change the dynamic table is a pure
function of the table, so the connection remembers its decoded form by its bytes until
the table changes (a client repeating a request sends the same indexed block: one dict lookup). Huffman
strings are decoded by the `hpack` library's decoder, which rejects EOS and bad padding (RFC 7541 5.2);
its static table is RFC 7541 Appendix A.

The encoder never inserts into the client's dynamic table ("literal without indexing", RFC 7541 6.2.2),
so what it makes depends on nothing but the fields: ring3 keeps whole encoded blocks (a file's validators
and type, the Date of this second) and joins them per response without encoding again.
"""

from __future__ import annotations

from collections import deque

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
_STATIC_COUNT = len(STATIC_TABLE)
_ENTRY_OVERHEAD = 32  # RFC 7541 4.1
_CACHE_ENTRIES = 64  # decoded blocks remembered per connection

Field = tuple[bytes, bytes]


class CompressionError(Exception):
    """The header block cannot be decoded: a connection error of type COMPRESSION_ERROR."""


class HeaderListTooLarge(Exception):
    """The decoded list passed the limit; `fields` is what was decoded before it (the table is kept in
    step: the whole block was read)."""


class Decoder:
    """One connection's HPACK decoder (the client's requests to us)."""

    __slots__ = ("_cache", "_max_size", "_size", "_table", "_table_limit", "generation", "max_list_size")

    def __init__(self, table_limit: int = 4096, max_list_size: int = 65536) -> None:
        self._table: deque[Field] = deque()
        self._size = 0
        self._table_limit = table_limit  # our SETTINGS_HEADER_TABLE_SIZE: what updates may ask
        self._max_size = table_limit
        self._cache: dict[bytes, list[Field]] = {}
        self.max_list_size = max_list_size
        self.generation = 0  # changes with the table: what was decoded before may no longer hold

    def decode(self, block: bytes) -> list[Field]:
        """The fields of one header block, in order. Raises CompressionError, or HeaderListTooLarge when
        the decoded list (RFC 9113 6.5.2's measure: name, value and 32 per field) passes the limit."""
        cached = self._cache.get(block)
        if cached is not None:
            return cached
        fields: list[Field] = []
        changed = False
        listed = 0
        too_large = False
        pos = 0
        end = len(block)
        while pos < end:
            byte = block[pos]
            if byte & 0x80:  # 6.1 indexed field
                index, pos = _integer(block, pos, 7)
                entry = self._entry(index)
            elif byte & 0x40:  # 6.2.1 literal with incremental indexing
                index, pos = _integer(block, pos, 6)
                name, value, pos = self._literal(block, pos, index)
                entry = name, value
                self._insert(entry)
                changed = True
            elif byte & 0x20:  # 6.3 dynamic table size update: only before the first field
                if fields or too_large:
                    raise CompressionError("a dynamic table size update after a field")
                size, pos = _integer(block, pos, 5)
                if size > self._table_limit:
                    raise CompressionError(f"a dynamic table size update to {size}, above the limit")
                self._max_size = size
                self._evict(0)
                changed = True
                continue
            else:  # 6.2.2 without indexing, 6.2.3 never indexed
                index, pos = _integer(block, pos, 4)
                name, value, pos = self._literal(block, pos, index)
                entry = name, value
            listed += len(entry[0]) + len(entry[1]) + _ENTRY_OVERHEAD
            if listed > self.max_list_size:
                too_large = True
            if not too_large:
                fields.append(entry)
        if too_large:
            raise HeaderListTooLarge(fields)
        if changed:
            self._cache.clear()
            self.generation += 1
        else:
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.clear()
            self._cache[block] = fields
        return fields

    def _entry(self, index: int) -> Field:
        if index == 0:
            raise CompressionError("index 0")
        if index <= _STATIC_COUNT:
            return STATIC_TABLE[index - 1]
        dynamic = index - _STATIC_COUNT - 1
        if dynamic >= len(self._table):
            raise CompressionError(f"index {index} is past the table")
        return self._table[dynamic]

    def _literal(self, block: bytes, pos: int, index: int) -> tuple[bytes, bytes, int]:
        if index:
            name = self._entry(index)[0]
        else:
            name, pos = _string(block, pos)
        value, pos = _string(block, pos)
        return name, value, pos

    def _insert(self, entry: Field) -> None:
        size = len(entry[0]) + len(entry[1]) + _ENTRY_OVERHEAD
        if size > self._max_size:
            self._table.clear()  # 4.4: an entry larger than the table empties it
            self._size = 0
            return
        self._evict(size)
        self._table.appendleft(entry)
        self._size += size

    def _evict(self, room: int) -> None:
        table = self._table
        while table and self._size + room > self._max_size:
            name, value = table.pop()
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD


def _integer(block: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """RFC 7541 5.1: the integer at `pos` with a `prefix`-bit prefix, and the position after it."""
    mask = (1 << prefix) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    end = len(block)
    while True:
        if pos >= end:
            raise CompressionError("a truncated integer")
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise CompressionError("an integer too large")


def _string(block: bytes, pos: int) -> tuple[bytes, int]:
    """RFC 7541 5.2: a string literal (Huffman-coded or not) and the position after it."""
    if pos >= len(block):
        raise CompressionError("a truncated string")
    huffman = block[pos] & 0x80
    length, pos = _integer(block, pos, 7)
    end = pos + length
    if end > len(block):
        raise CompressionError("a string longer than its block")
    data = block[pos:end]
    if huffman:
        try:
            data = decode_huffman(data)
        except HPACKDecodingError as exc:
            raise CompressionError(f"bad Huffman code: {exc}") from None
    return data, end


# -- encoding -------------------------------------------------------------------------------------

# The first static index of each name (RFC 7541 Appendix A), for "literal without indexing, indexed name".
_NAME_INDEX: dict[bytes, int] = {}
for _number, (_name, _) in enumerate(STATIC_TABLE, 1):
    _NAME_INDEX.setdefault(_name, _number)
_STATUS_INDEX = {b"200": 8, b"204": 9, b"206": 10, b"304": 11, b"400": 12, b"404": 13, b"500": 14}
_STATUS: dict[int, bytes] = {}


def encode_integer(value: int, prefix: int, first: int) -> bytes:
    """RFC 7541 5.1, with the representation's bits `first` in the first byte."""
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes((first | value,))
    out = bytearray((first | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field as a literal without indexing (the name indexed when the static table has it)."""
    index = _NAME_INDEX.get(name)
    value_part = encode_integer(len(value), 7, 0) + value
    if index is not None:
        return encode_integer(index, 4, 0) + value_part
    return b"\x00" + encode_integer(len(name), 7, 0) + name + value_part


def encode_status(status: int) -> bytes:
    """`:status`: one byte for the seven in the static table."""
    encoded = _STATUS.get(status)
    if encoded is None:
        digits = b"%d" % status
        index = _STATUS_INDEX.get(digits)
        encoded = bytes((0x80 | index,)) if index else b"\x08\x03" + digits
        _STATUS[status] = encoded
    return encoded


def encode_fields(fields: list[Field]) -> bytes:
    return b"".join([encode_field(name, value) for name, value in fields])


# A dynamic table size update to 0: sent at the start of the first block after the client changes its
# SETTINGS_HEADER_TABLE_SIZE (RFC 7541 4.2). The encoder never uses the table, so 0 always holds.
TABLE_SIZE_ZERO = b"\x20"
