"""The end-of-run summary a person reads first (also saved as ``summary.txt``)."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return "%.1f %s" % (n, unit) if unit != "B" else "%d B" % n
        n /= 1024
    return "%d B" % n


def render_summary(m: dict) -> str:
    lines = []
    total = sum(s["records"] for s in m["splits"].values())
    wall = m.get("wall_seconds") or 0
    lines.append("Converted %d images from %s into %s" % (total, m["input"], m.get("output", "the output folder")))
    if wall:
        lines.append("in %.1f s (%.0f images/s)" % (wall, total / wall if wall else 0))
    lines.append("")
    lines.append("%-12s %10s %8s %12s" % ("split", "images", "shards", "bytes"))
    for split, doc in m["splits"].items():
        lines.append("%-12s %10d %8d %12s" % (split, doc["records"], len(doc["shards"]), human_bytes(doc["bytes"])))
    lines.append("")
    per_class: dict[str, int] = {}
    for counts in m.get("class_counts", {}).values():
        for name, n in counts.items():
            per_class[name] = per_class.get(name, 0) + n
    lines.append("%d classes" % m["num_classes"])
    if per_class:
        smallest = min(per_class.items(), key=lambda kv: (kv[1], kv[0]))
        largest = max(per_class.items(), key=lambda kv: (kv[1], kv[0]))
        lines.append("  smallest: %s (%d images), largest: %s (%d images)" % (smallest + largest))
        for name in m["classes"]:
            lines.append("  %-30s %8d" % (name, per_class.get(name, 0)))
    lines.append("")
    if m["errors"]:
        lines.append("%d inputs skipped (details in %s):" % (m["errors"], m["errors_file"]))
        for reason, n in m["errors_by_reason"].items():
            lines.append("  %-20s %8d" % (reason, n))
    else:
        lines.append("No inputs skipped.")
    if m.get("ignored_non_image_files"):
        lines.append("%d files without an image extension were ignored." % m["ignored_non_image_files"])
    lines.append("")
    out = m.get("output", "OUT")
    lines.append("Next:")
    lines.append("  python -m pipeline.verify %s" % out)
    lines.append("  python -m pipeline.preview %s --split train" % out)
    for split in m["splits"]:
        lines.append("  SageMaker channel '%s': %s/%s/" % (split, out.rstrip("/"), split))
    return "\n".join(lines) + "\n"
