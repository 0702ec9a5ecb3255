"""Runs under .venv-mxnet or .venv-dali: decode raw image files with that reader's own decoder, one by one.

Request (JSON on stdin): {"reader": "mxnet" | "dali", "files": [path, ...]}
Answer: {"results": [{"ok": bool, "shape": [h, w, c] or null, "error": str}, ...]}, one per file.

mxnet: ``mx.image.imdecode`` (the OpenCV inside libmxnet, what ImageRecordIter uses too).
DALI: ``fn.decoders.image(device="cpu")`` fed by ``fn.external_source``; a fresh
pipeline per file, as DALI stops a whole pipeline at the first image it cannot decode.
"""

import json
import sys


def decode_mxnet(paths):
    import mxnet as mx

    out = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:
            shape = list(mx.image.imdecode(data).shape)
            out.append({"ok": True, "shape": shape, "error": ""})
        except mx.base.MXNetError as exc:
            out.append({"ok": False, "shape": None, "error": _gist(exc)})
    return out


def _gist(exc) -> str:
    """The line of a reader's multi-line error message that says what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "rror" in line or "ailed" in line or "nsupported" in line] or lines
    return useful[-1][:300] if useful else type(exc).__name__


def decode_dali(paths):
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types

    out = []
    for path in paths:
        data = np.fromfile(path, dtype=np.uint8)

        @pipeline_def(batch_size=1, num_threads=1, device_id=None)
        def pipe():
            return fn.decoders.image(fn.external_source(name="encoded", dtype=types.UINT8), device="cpu", output_type=types.RGB)

        try:
            p = pipe()
            p.build()
            p.feed_input("encoded", [data])
            (images,) = p.run()
            out.append({"ok": True, "shape": list(np.asarray(images.at(0)).shape), "error": ""})
        except RuntimeError as exc:
            out.append({"ok": False, "shape": None, "error": _gist(exc)})
    return out


def main():
    request = json.load(sys.stdin)
    decode = {"mxnet": decode_mxnet, "dali": decode_dali}[request["reader"]]
    print(json.dumps({"results": decode(request["files"])}))


if __name__ == "__main__":
    main()
