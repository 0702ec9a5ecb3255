"""Runs under .venv-mxnet: write record files with mxnet's own writer (the reference).

Request (JSON on stdin):
    {"blob": path of a file holding every payload's bytes, "outdir": folder,
     "files": [{"name": str, "records": [{"key": int, "raw": bool, "label": float | [float],
                                          "id": int, "id2": int, "data": [offset, length]}]}]}

For each file, writes OUTDIR/NAME.rec and OUTDIR/NAME.idx with
``MXIndexedRecordIO(idx, rec, 'w').write_idx(key, mx.recordio.pack(header, s))``
(or ``write_idx(key, s)`` for a raw record). Answer: {"written": [names]}.
"""

import json
import os
import sys

import mxnet as mx


def main():
    request = json.load(sys.stdin)
    with open(request["blob"], "rb") as f:
        blob = f.read()
    written = []
    for spec in request["files"]:
        base = os.path.join(request["outdir"], spec["name"])
        writer = mx.recordio.MXIndexedRecordIO(base + ".idx", base + ".rec", "w")
        for rec in spec["records"]:
            offset, length = rec["data"]
            s = blob[offset : offset + length]
            if rec["raw"]:
                writer.write_idx(rec["key"], s)
            else:
                header = mx.recordio.IRHeader(0, rec["label"], rec["id"], rec["id2"])
                writer.write_idx(rec["key"], mx.recordio.pack(header, s))
        writer.close()
        written.append(spec["name"])
    print(json.dumps({"written": written}))


if __name__ == "__main__":
    main()
