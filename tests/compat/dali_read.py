"""Runs under .venv-dali: read pipeline output with NVIDIA DALI's MXNet reader, on the CPU.

Request (JSON on stdin):
    {"readers": [{"path": [rec, ...], "index_path": merged idx, "batch_size": int}, ...]}

For each reader: ``fn.readers.mxnet(path=..., index_path=[...])`` in a pipeline
with ``device_id=None`` (no GPU), images also decoded by ``fn.decoders.image``
on the CPU. Exactly one epoch is read (``epoch_size`` samples, in file order).
Answer: {"results": [{"epoch_size": n, "items": [{"sha256", "len", "label", "shape"}]}]}.
"""

import hashlib
import json
import sys

import numpy as np
from nvidia.dali import fn, pipeline_def, types


def read_epoch(spec):
    @pipeline_def(batch_size=spec["batch_size"], num_threads=1, device_id=None)
    def pipe():
        jpegs, labels = fn.readers.mxnet(
            path=spec["path"], index_path=[spec["index_path"]], random_shuffle=False, name="reader"
        )
        images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
        return jpegs, labels, images

    p = pipe()
    p.build()
    size = p.epoch_size("reader")
    items = []
    while len(items) < size:
        jpegs, labels, images = p.run()
        for i in range(len(jpegs)):
            if len(items) == size:
                break
            data = np.asarray(jpegs.at(i)).tobytes()
            items.append(
                {
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "len": len(data),
                    "label": [float(v) for v in np.asarray(labels.at(i)).ravel()],
                    "shape": list(np.asarray(images.at(i)).shape),
                }
            )
    return {"epoch_size": size, "items": items}


def main():
    request = json.load(sys.stdin)
    print(json.dumps({"results": [read_epoch(spec) for spec in request["readers"]]}))


if __name__ == "__main__":
    main()
