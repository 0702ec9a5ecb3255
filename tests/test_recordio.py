"""The RecordIO codec against the dmlc-core rules, written out by hand (no mxnet here).

tests/compat checks the same codec byte for byte against mxnet's own writer.
"""

import io
import os
import struct

import pytest

from imgrec import recordio
from imgrec.recordio import MAGIC_BYTES, RecordIOError

M = MAGIC_BYTES


def lrec(cflag, length):
    return struct.pack("<I", (cflag << 29) | length)


def framed(payload):
    return b"".join(bytes(p) for p in recordio.frame(payload))


def test_plain_record_has_magic_length_and_padding():
    assert framed(b"abcde") == M + lrec(0, 5) + b"abcde" + b"\0\0\0"


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6, 7, 8])
def test_padding_to_four_bytes(n):
    out = framed(b"x" * n)
    assert len(out) == 8 + n + (-n % 4)
    assert out[8 + n :] == b"\0" * (-n % 4)


def test_empty_payload_is_a_header_alone():
    assert framed(b"") == M + lrec(0, 0)


def test_aligned_magic_splits_into_continuation_parts():
    payload = b"abcd" + M + b"efgh"
    expected = M + lrec(1, 4) + b"abcd" + M + lrec(3, 4) + b"efgh"
    assert framed(payload) == expected


def test_unaligned_magic_is_left_alone():
    payload = b"ab" + M + b"cd"
    assert framed(payload) == M + lrec(0, 8) + payload


def test_magic_at_start_end_and_back_to_back():
    # start: empty first part
    assert framed(M + b"tail") == M + lrec(1, 0) + M + lrec(3, 4) + b"tail"
    # end: empty last part
    assert framed(b"head" + M) == M + lrec(1, 4) + b"head" + M + lrec(3, 0)
    # twice back to back: first, empty middle, empty last
    assert framed(M + M) == M + lrec(1, 0) + M + lrec(2, 0) + M + lrec(3, 0)


def test_magic_twice_with_data_between_uses_middle_flag():
    payload = b"aaaa" + M + b"bbbbbbbb" + M + b"cc"
    expected = (
        M + lrec(1, 4) + b"aaaa" + M + lrec(2, 8) + b"bbbbbbbb" + M + lrec(3, 2) + b"cc" + b"\0\0"
    )
    assert framed(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"a",
        b"abcd" * 3,
        M,
        M + M + M,
        b"x" + M + b"yyy" + M,
        b"1234" + M + b"56" + M + b"78",
        os.urandom(3 * 1024 * 1024 + 3),
        (b"\x0a\x23\xd7\xce" * 1000),
    ],
)
def test_round_trip_through_reader(payload):
    buf = io.BytesIO()
    w = recordio.RecordWriter(buf)
    first = w.write(payload)
    second = w.write(b"next")
    buf.seek(0)
    records = list(recordio.read_records(buf))
    assert [r.payload for r in records] == [payload, b"next"]
    assert [r.offset for r in records] == [first, second]
    assert first == 0 and second == len(framed(payload))
    buf.seek(second)
    assert recordio.read_record_at(buf, second) == b"next"


def test_writer_tracks_offset_and_sha256():
    import hashlib

    buf = io.BytesIO()
    w = recordio.RecordWriter(buf)
    for p in (b"a", b"bb" + M, b""):
        w.write(p)
    assert w.offset == len(buf.getvalue())
    assert w.records == 3
    assert w.sha256() == hashlib.sha256(buf.getvalue()).hexdigest()


def test_pack_scalar_label_matches_mxnet_layout():
    packed = recordio.pack(3.0, 17, b"IMG")
    assert packed[:24] == struct.pack("<IfQQ", 0, 3.0, 17, 0)
    assert packed[24:] == b"IMG"
    header, body = recordio.unpack(packed)
    assert (header.flag, header.label, header.id, header.id2, body) == (0, 3.0, 17, 0, b"IMG")


def test_pack_multi_label_sets_flag_and_float32_vector():
    packed = recordio.pack([1, 0, 2.5], 5, b"X")
    assert packed[:24] == struct.pack("<IfQQ", 3, 0.0, 5, 0)
    assert packed[24:36] == struct.pack("<3f", 1.0, 0.0, 2.5)
    header, body = recordio.unpack(packed)
    assert header.flag == 3 and header.label == (1.0, 0.0, 2.5) and body == b"X"


def test_reader_rejects_bad_magic_with_offset():
    buf = io.BytesIO()
    recordio.RecordWriter(buf).write(b"abcd")
    data = bytearray(buf.getvalue()) + bytearray(b"\0" * 8)
    with pytest.raises(RecordIOError, match=r"bad magic .* at byte 12"):
        list(recordio.read_records(io.BytesIO(bytes(data)), "f.rec"))


def test_reader_rejects_truncation_and_sequence_errors():
    buf = io.BytesIO()
    recordio.RecordWriter(buf).write(b"abcdefgh")
    with pytest.raises(RecordIOError, match="truncated"):
        list(recordio.read_records(io.BytesIO(buf.getvalue()[:-3])))
    lone_middle = M + lrec(2, 0)
    with pytest.raises(RecordIOError, match="out of sequence"):
        list(recordio.read_records(io.BytesIO(lone_middle)))
    unfinished = M + lrec(1, 0)
    with pytest.raises(RecordIOError, match="ends before its last part"):
        list(recordio.read_records(io.BytesIO(unfinished)))


def test_reader_rejects_nonzero_padding():
    bad = M + lrec(0, 1) + b"a\x01\0\0"
    with pytest.raises(RecordIOError, match="padding"):
        list(recordio.read_records(io.BytesIO(bad)))


def test_idx_lines_round_trip():
    text = recordio.format_idx_line(0, 0) + recordio.format_idx_line(12, 4096)
    assert text == "0\t0\n12\t4096\n"
    assert recordio.parse_idx(text) == [(0, 0), (12, 4096)]
    with pytest.raises(RecordIOError, match="line 1"):
        recordio.parse_idx("0 0\n")


def test_oversized_record_is_refused():
    class Huge(bytes):
        def __len__(self):
            return recordio.MAX_RECORD_BYTES + 1

    with pytest.raises(RecordIOError, match="too large"):
        recordio.frame(Huge())


def test_background_writer_writes_the_same_bytes_offsets_and_sha256():
    import hashlib
    import random

    rng = random.Random(7)
    # sizes around the chunk size, and payloads with aligned and unaligned magic words
    payloads = [rng.randbytes(rng.choice([0, 3, 100, 5000, 300_000, 1_200_000])) for _ in range(40)]
    payloads += [b"xx" + M + b"yy" * 100, M * 5000]
    plain, threaded = io.BytesIO(), io.BytesIO()
    w1 = recordio.RecordWriter(plain)
    offsets1 = [w1.write(p) for p in payloads]
    with recordio.RecordWriter(threaded, background=True) as w2:
        offsets2 = [w2.write(p) for p in payloads]
    assert threaded.getvalue() == plain.getvalue()
    assert offsets2 == offsets1 and w2.offset == w1.offset == len(plain.getvalue())
    assert w2.records == len(payloads)
    assert w2.sha256() == w1.sha256() == hashlib.sha256(plain.getvalue()).hexdigest()


def test_background_writer_needs_close_before_sha256():
    w = recordio.RecordWriter(io.BytesIO(), background=True)
    w.write(b"abc")
    with pytest.raises(RuntimeError, match="before close"):
        w.sha256()
    w.close()
    assert len(w.sha256()) == 64


class _FailingFile(io.RawIOBase):
    def __init__(self, fail_after):
        self.written = 0
        self.fail_after = fail_after

    def writable(self):
        return True

    def write(self, data):
        if self.written + len(data) > self.fail_after:
            raise OSError(28, "No space left on device")
        self.written += len(data)
        return len(data)


def test_background_writer_raises_the_write_error_in_the_caller():
    w = recordio.RecordWriter(_FailingFile(fail_after=3 << 20), background=True)
    with pytest.raises(OSError, match="No space left"):
        for _ in range(200):  # 200 x 100 KB: the fourth chunk fails
            w.write(b"\1" * 100_000)
        w.close()


def test_background_writer_abort_after_an_error_does_not_hang():
    # The thread's error may reach a write first (OSError) or not (ValueError): either way no hang.
    w = recordio.RecordWriter(_FailingFile(fail_after=0), background=True)
    with pytest.raises((ValueError, OSError)):
        with w:
            for _ in range(50):
                w.write(b"\1" * 100_000)
            raise ValueError("caller failed")
    assert w._sink.closed and not any(t.is_alive() for t in w._sink._threads)
