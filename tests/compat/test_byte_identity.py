"""Our .rec/.idx are byte-identical to mxnet's writer, and our reader reads what mxnet writes.

Every case is a sequence of (key, IRHeader, image bytes) generated here; mxnet
1.9.1 writes it in its own environment with
``MXIndexedRecordIO(idx, rec, 'w').write_idx(key, mx.recordio.pack(header, s))``
and ``imgrec.recordio`` writes it here; the files must be equal byte for byte.
"""

from __future__ import annotations

import io
import random
import struct

import pytest

from imgrec import recordio
from imgrec.recordio import MAGIC_BYTES as M

from .conftest import run_helper


def _rng(name: str) -> random.Random:
    return random.Random("byte-identity/" + name)


def _bytes_without_magic(rng: random.Random, n: int) -> bytes:
    """Random bytes guaranteed free of the magic word (so the cases put it only where they say)."""
    data = bytearray(rng.randbytes(n))
    pos = data.find(M)
    while pos != -1:
        data[pos] ^= 0xFF
        pos = data.find(M, pos)
    return bytes(data)


def _with_magic_at(rng: random.Random, size: int, positions: list[int]) -> bytes:
    data = bytearray(_bytes_without_magic(rng, size))
    for p in positions:
        data[p : p + 4] = M
    return bytes(data)


def _one(image: bytes, label=3.0, record_id=5, id2=0, key=None):
    return [dict(key=record_id if key is None else key, label=label, id=record_id, id2=id2, raw=False, image=image)]


def _cases() -> dict[str, list[dict]]:
    r = _rng
    cases: dict[str, list[dict]] = {
        # Labels and header fields.
        "single_label": _one(_bytes_without_magic(r("a"), 1000), label=3.0),
        "single_label_fraction_big_ids": _one(_bytes_without_magic(r("b"), 500), 2.5, record_id=2**40 + 3, id2=7, key=11),
        "multi_label_float32": _one(_bytes_without_magic(r("c"), 777), label=[1.0, 0.0, 2.5, 0.1, -3.75]),
        "multi_label_single_value": _one(_bytes_without_magic(r("d"), 64), label=[4.0]),
        # Payload lengths.
        "empty_image": _one(b""),
        "empty_image_multi_label": _one(b"", label=[1.0, 2.0]),
        "magic_free_len_1": _one(b"\x01"),
        "magic_free_len_2": _one(b"\x01\x02"),
        "magic_free_len_3": _one(b"\x01\x02\x03"),
        **{"len_%d_mod_4" % k: _one(_bytes_without_magic(r("len%d" % k), 1000 + k)) for k in range(4)},
        # The magic word inside the image bytes (the IRHeader is 24 bytes, so image
        # offset n is payload offset 24 + n and has the same alignment).
        "magic_once_aligned": _one(_with_magic_at(r("e"), 40, [16])),
        "magic_once_unaligned": _one(_with_magic_at(r("f"), 41, [17])),
        "magic_twice_aligned": _one(_with_magic_at(r("g"), 64, [8, 40])),
        "magic_twice_aligned_and_unaligned": _one(_with_magic_at(r("h"), 64, [8, 41])),
        "magic_back_to_back_aligned": _one(_with_magic_at(r("i"), 32, [8, 12])),
        "magic_back_to_back_unaligned": _one(_with_magic_at(r("j"), 33, [9, 13])),
        "magic_three_in_a_row_aligned": _one(_with_magic_at(r("k"), 20, [4, 8, 12])),
        "magic_at_very_start": _one(M + _bytes_without_magic(r("l"), 21)),
        "magic_at_very_end_aligned": _one(_bytes_without_magic(r("m"), 20) + M),
        "magic_at_very_end_unaligned": _one(_bytes_without_magic(r("n"), 21) + M),
        "magic_only": _one(M),
        "magic_at_start_and_end": _one(M + _bytes_without_magic(r("o"), 12) + M),
        "magic_after_multi_label_header": _one(M + _bytes_without_magic(r("p"), 9) + M, label=[1.0, 2.0, 3.0]),
        "magic_many_random_places": _one(
            _with_magic_at(r("q"), 70_000, sorted(r("q-pos").sample(range(0, 69_990, 5), 60)))
        ),
        # Several megabytes, magic words near the start, in the middle (both alignments) and at the end.
        "several_mb": _one(_with_magic_at(r("big"), 5 * 1024 * 1024 + 3, [0, 1 << 20, (2 << 20) + 1, 5 * 1024 * 1024 - 1])),
        # Records without an IRHeader (MXIndexedRecordIO.write_idx(key, s)): the
        # framing edge cases where the magic word is at payload offset 0.
        "raw_empty": [dict(key=0, raw=True, image=b"")],
        "raw_magic_only": [dict(key=0, raw=True, image=M)],
        "raw_magic_twice": [dict(key=0, raw=True, image=M + M)],
        "raw_magic_start_unaligned_end": [dict(key=0, raw=True, image=M + b"ab" + M)],
    }
    # All of the above in one file, so offsets accumulate across every kind of record.
    sequence = []
    for n, name in enumerate(sorted(cases)):
        for rec in cases[name]:
            sequence.append(dict(rec, key=1000 + n))
    cases["all_in_one_file"] = sequence
    return cases


CASES = _cases()


def _payload(rec: dict) -> bytes:
    if rec["raw"]:
        return rec["image"]
    return recordio.pack(rec["label"], rec["id"], rec["image"], rec.get("id2", 0))


def write_ours(records: list[dict]) -> tuple[bytes, bytes]:
    rec_file = io.BytesIO()
    writer = recordio.RecordWriter(rec_file)
    idx = []
    for rec in records:
        idx.append(recordio.format_idx_line(rec["key"], writer.write(_payload(rec))))
    return rec_file.getvalue(), "".join(idx).encode()


@pytest.fixture(scope="module")
def mx_files(mx_python, tmp_path_factory):
    """Every case written by mxnet: {name: (rec bytes, idx bytes)}."""
    work = tmp_path_factory.mktemp("mx-write")
    blob = bytearray()
    files = []
    for name, records in CASES.items():
        specs = []
        for rec in records:
            specs.append(
                dict(key=rec["key"], raw=rec["raw"], label=rec.get("label", 0.0), id=rec.get("id", 0),
                     id2=rec.get("id2", 0), data=[len(blob), len(rec["image"])])
            )
            blob += rec["image"]
        files.append({"name": name, "records": specs})
    (work / "blob.bin").write_bytes(bytes(blob))
    answer = run_helper(mx_python, "mx_write.py", {"blob": str(work / "blob.bin"), "outdir": str(work), "files": files})
    assert answer["written"] == list(CASES)
    return {name: ((work / (name + ".rec")).read_bytes(), (work / (name + ".idx")).read_bytes()) for name in CASES}


def _first_difference(a: bytes, b: bytes) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return "first difference at byte %d: ours %02x, mxnet %02x" % (i, x, y)
    return "lengths differ: ours %d bytes, mxnet %d bytes" % (len(a), len(b))


@pytest.mark.parametrize("name", list(CASES))
def test_rec_and_idx_byte_identical_to_mxnet(name, mx_files):
    ours_rec, ours_idx = write_ours(CASES[name])
    mx_rec, mx_idx = mx_files[name]
    assert ours_rec == mx_rec, _first_difference(ours_rec, mx_rec)
    assert ours_idx == mx_idx, (ours_idx[:200], mx_idx[:200])


@pytest.mark.parametrize("name", list(CASES))
def test_our_reader_reads_mxnet_files(name, mx_files):
    mx_rec, mx_idx = mx_files[name]
    records = CASES[name]
    raw = list(recordio.read_records(io.BytesIO(mx_rec), name + ".rec"))
    index = recordio.parse_idx(mx_idx.decode(), name + ".idx")
    assert [key for key, _ in index] == [rec["key"] for rec in records]
    assert [offset for _, offset in index] == [r.offset for r in raw]
    for rec, found, (_, offset) in zip(records, raw, index):
        assert recordio.read_record_at(io.BytesIO(mx_rec), offset) == found.payload
        if rec["raw"]:
            assert found.payload == rec["image"]
            continue
        header, image = recordio.unpack(found.payload)
        assert image == rec["image"]
        assert (header.id, header.id2) == (rec["id"], rec.get("id2", 0))
        if isinstance(rec["label"], list):
            want = tuple(struct.unpack("<%df" % len(rec["label"]), struct.pack("<%df" % len(rec["label"]), *rec["label"])))
            assert (header.flag, header.label) == (len(rec["label"]), want)
        else:
            assert (header.flag, header.label) == (0, rec["label"])


def test_cases_put_the_magic_word_where_intended():
    """Guards the generator itself: the magic cases really contain aligned and unaligned magic words."""
    def aligned_and_unaligned(image):
        positions = []
        pos = image.find(M)
        while pos != -1:
            positions.append(pos)
            pos = image.find(M, pos + 1)
        return {p % 4 == 0 for p in positions}

    assert aligned_and_unaligned(CASES["magic_once_aligned"][0]["image"]) == {True}
    assert aligned_and_unaligned(CASES["magic_once_unaligned"][0]["image"]) == {False}
    assert aligned_and_unaligned(CASES["magic_many_random_places"][0]["image"]) == {True, False}
    assert aligned_and_unaligned(CASES["several_mb"][0]["image"]) == {True, False}
    assert len(CASES["several_mb"][0]["image"]) > 5_000_000
    # An aligned magic word makes a multi-part record, an unaligned one does not.
    def parts(rec):
        return sum(1 for piece in recordio.frame(_payload(rec)) if bytes(piece) == M)

    assert parts(CASES["magic_once_aligned"][0]) == 2
    assert parts(CASES["magic_once_unaligned"][0]) == 1
    assert parts(CASES["magic_back_to_back_aligned"][0]) == 3


def test_mxnet_itself_splits_records_at_aligned_magic_words(mx_files):
    """The reference behaviour these cases exercise: an aligned magic word starts a new part, an unaligned one does not."""
    def aligned_magic_positions(data):
        return [p for p in range(0, len(data) - 3, 4) if data[p : p + 4] == M]

    aligned_rec, _ = mx_files["magic_once_aligned"]
    unaligned_rec, _ = mx_files["magic_once_unaligned"]
    assert len(aligned_magic_positions(aligned_rec)) == 2  # first part + last part
    assert len(aligned_magic_positions(unaligned_rec)) == 1 and unaligned_rec.count(M) == 2
