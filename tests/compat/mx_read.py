"""Runs under .venv-mxnet: read pipeline output with mxnet's own readers and report what they return.

Request (JSON on stdin): {"tasks": [task, ...]}; answer: {"results": [result, ...]}, one per task.

    {"kind": "records", "shards": [[rec, idx], ...]}
        Every key of every .idx through MXIndexedRecordIO.read_idx + mx.recordio.unpack:
        header fields, sha256 and length of the image bytes, the decoded shape and an
        8x8 area-averaged RGB thumbnail; plus the record count of a sequential
        MXRecordIO read of each shard.

    {"kind": "iter", "path_imgrec": str, "path_imgidx": str, "epochs": int,
     "data_shape": [c, h, w], "resize": int, "shards": [[rec, idx], ...]}
        mx.io.ImageRecordIter(shuffle=True, label_width=1, batch_size=1) for whole epochs.
        Each item: its label and, when resize is 0, the id of the record whose decoded
        pixels it holds (found by decoding every record of "shards" with mx.image.imdecode).

    {"kind": "gluon", "recs": [rec, ...], "shards": [[rec, idx], ...]}
        mx.gluon.data.vision.ImageRecordDataset(rec) (it finds the .idx beside the .rec):
        length, and per item the label, shape and the id of the record with those pixels.
"""

import hashlib
import json
import sys

import mxnet as mx
import numpy as np


def pixels_key(array) -> str:
    a = np.ascontiguousarray(array.astype(np.uint8))
    return "%s:%s" % (a.shape, hashlib.sha256(a.tobytes()).hexdigest())


def reference_pixels(shards):
    """{pixels key: record id} for every record, decoded the way mxnet's readers decode."""
    out = {}
    for rec, idx in shards:
        reader = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
        for key in reader.keys:
            header, s = mx.recordio.unpack(reader.read_idx(key))
            k = pixels_key(mx.image.imdecode(s).asnumpy())
            if k in out:
                raise SystemExit("two records decode to the same pixels (ids %d and %d): cannot tell them apart" % (out[k], header.id))
            out[k] = int(header.id)
        reader.close()
    return out


def label_value(label):
    return [float(v) for v in label] if isinstance(label, np.ndarray) else float(label)


def task_records(task):
    records, sequential = [], []
    for n, (rec, idx) in enumerate(task["shards"]):
        reader = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
        for key in reader.keys:
            header, s = mx.recordio.unpack(reader.read_idx(key))
            img = mx.image.imdecode(s)
            thumb = mx.image.imresize(img, 8, 8, interp=3).asnumpy()
            records.append(
                {
                    "shard": n,
                    "key": int(key),
                    "flag": int(header.flag),
                    "label": label_value(header.label),
                    "id": int(header.id),
                    "id2": int(header.id2),
                    "len": len(s),
                    "sha256": hashlib.sha256(s).hexdigest(),
                    "shape": list(img.shape),
                    "thumb": thumb.astype(int).ravel().tolist(),
                }
            )
        reader.close()
        plain = mx.recordio.MXRecordIO(rec, "r")
        count = 0
        while plain.read() is not None:
            count += 1
        plain.close()
        sequential.append(count)
    return {"records": records, "sequential": sequential}


def task_iter(task):
    ref = reference_pixels(task["shards"]) if not task.get("resize") else {}
    kwargs = dict(
        path_imgrec=task["path_imgrec"],
        path_imgidx=task["path_imgidx"],
        data_shape=tuple(task["data_shape"]),
        label_width=1,
        shuffle=True,
        batch_size=1,
        preprocess_threads=1,
    )
    if task.get("resize"):
        kwargs["resize"] = task["resize"]
    it = mx.io.ImageRecordIter(**kwargs)
    epochs = []
    for epoch in range(task["epochs"]):
        if epoch:
            it.reset()
        items = []
        for batch in it:
            assert batch.pad == 0
            label = float(batch.label[0].asnumpy()[0])
            item = {"label": label}
            if ref:
                data = batch.data[0].asnumpy()[0].transpose(1, 2, 0)
                item["id"] = ref.get(pixels_key(data))
            items.append(item)
        epochs.append(items)
    return {"epochs": epochs}


def task_gluon(task):
    ref = reference_pixels(task["shards"])
    out = []
    for rec in task["recs"]:
        ds = mx.gluon.data.vision.ImageRecordDataset(rec)
        items = []
        for i in range(len(ds)):
            img, label = ds[i]
            items.append({"label": float(label), "shape": list(img.shape), "id": ref.get(pixels_key(img.asnumpy()))})
        out.append({"rec": rec, "len": len(ds), "items": items})
    return {"datasets": out}


def main():
    request = json.load(sys.stdin)
    handlers = {"records": task_records, "iter": task_iter, "gluon": task_gluon}
    print(json.dumps({"results": [handlers[t["kind"]](t) for t in request["tasks"]]}))


if __name__ == "__main__":
    main()
