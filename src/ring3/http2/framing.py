"""How HTTP/2 frames reach the output path (ring3.output), which alone makes the syscalls.

The connection hands a list of pieces: frame headers and small payloads as bytes, file payloads as
FileRange. Runs of bytes are joined into one buffer, so a batch of frames leaves in one send. A file's DATA
frames go one of two ways:

- `read_files` off (h2c's `file_frames = "sendfile"`): each payload stays a FileRange, so the output path
  sends its 9-byte header with MSG_MORE and the payload by sendfile: no copy, two syscalls a frame.
- `read_files` on (TLS always; h2c's `file_frames = "read"`): the payloads of consecutive frames of one
  file are read with one preadv straight into their places between the frame headers, and the whole run
  leaves in the same send as the rest: one copy, one read for many frames (16 frames of 16 KiB per
  256 KiB batch).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ring3.events import FileRange, Segment
from ring3.observe.ledger import Ledger
from ring3.output import JOIN_LIMIT, OutputPath, SendFailed

_HEADER = 9


Piece = Segment | bytearray


def send_frames(output: OutputPath, frames: list[Segment], read_files: bool, ledger: Ledger) -> None:
    if len(frames) == 1 and type(frames[0]) is bytes:
        output.write(frames[0])
        return
    # _read_file_runs raises OSError or SendFailed (the file shrank): the caller closes the connection.
    parts: Sequence[Piece] = _read_file_runs(frames, ledger) if read_files else frames
    segments: list[Piece] = []
    run: list[bytes | bytearray] = []
    size = 0
    for part in parts:
        if isinstance(part, FileRange):
            if run:
                segments.append(run[0] if len(run) == 1 else b"".join(run))
                run, size = [], 0
            segments.append(part)
        elif size + len(part) <= JOIN_LIMIT or not run:
            run.append(part)
            size += len(part)
        else:
            segments.append(run[0] if len(run) == 1 else b"".join(run))
            run, size = [part], len(part)
    if run:
        segments.append(run[0] if len(run) == 1 else b"".join(run))
    output.write_segments(segments)


def _read_file_runs(parts: list[Segment], ledger: Ledger) -> list[Piece]:
    """`parts` with every run of [header, FileRange, header, FileRange...] of one file, each range
    following the one before, replaced by one buffer that holds the headers and the file's bytes."""
    out: list[Piece] = []
    index = 0
    count = len(parts)
    while index < count:
        part = parts[index]
        if (not isinstance(part, bytes) or len(part) != _HEADER or index + 1 >= count
                or not isinstance(parts[index + 1], FileRange)):
            out.append(part)
            index += 1
            continue
        first = parts[index + 1]
        assert isinstance(first, FileRange)
        end = index
        total = 0
        expected = first.offset
        while end + 1 < count:
            header, payload = parts[end], parts[end + 1]
            if (not isinstance(header, bytes) or len(header) != _HEADER or not isinstance(payload, FileRange)
                    or payload.fd != first.fd or payload.offset != expected):
                break
            total += _HEADER + payload.count
            expected += payload.count
            end += 2
        buffer = bytearray(total)
        view = memoryview(buffer)
        slots = []
        at = 0
        for pos in range(index, end, 2):
            header, payload = parts[pos], parts[pos + 1]
            assert isinstance(header, bytes) and isinstance(payload, FileRange)
            view[at:at + _HEADER] = header
            slots.append(view[at + _HEADER:at + _HEADER + payload.count])
            at += _HEADER + payload.count
        ledger.pread += 1
        got = os.preadv(first.fd, slots, first.offset)
        if got != expected - first.offset:
            raise SendFailed("file shrank while being sent")
        out.append(buffer)  # sent from where it was read: joined with its neighbours only when small
        index = end
    return out
