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
    labels = m.get("labels", {})
    if labels.get("source", "folders") != "folders" or labels.get("format", "single") != "single":
        lines.append("Labels from %s; records carry %s" % (
            labels.get("source"), "one label each" if labels.get("format") == "single"
            else "%s vectors of width %d" % (labels.get("format"), labels.get("width", 0))))
    report = m.get("report_counts")
    if report is not None:
        found = ["%d %s" % (n, kind) for kind, n in sorted(report.items()) if kind not in ("labelled", "error")]
        lines.append("Report (%s): %s" % (m.get("report_file"), ", ".join(found) if found else "nothing to report"))
    lines.append("")
    if m["errors"]:
        lines.append("%d inputs skipped (details in %s):" % (m["errors"], m["errors_file"]))
        for reason, n in m["errors_by_reason"].items():
            lines.append("  %-20s %8d" % (reason, n))
    else:
        lines.append("No inputs skipped.")
    if m.get("ignored_non_image_files"):
        lines.append("%d files without an image extension were ignored." % m["ignored_non_image_files"])
    if m.get("warnings"):
        lines.append("")
        lines.append("Warnings:")
        lines.extend("  " + w for w in m["warnings"])
    lines.append("")
    out = m.get("output", "OUT")
    lines.append("Next:")
    lines.append("  python -m pipeline.verify %s" % out)
    lines.append("  python -m pipeline.preview %s --split train" % out)
    for split, doc in m["splits"].items():
        folder = doc["single_file"]["rec"].rsplit("/", 1)[0] if doc.get("single_file") else split
        lines.append("  SageMaker channel '%s': %s/%s/" % (split, out.rstrip("/"), folder))
    if m.get("sagemaker"):
        from imgrec.sagemaker import estimator_snippet

        lines.append("")
        lines.append("Train on SageMaker (values from %s):" % m.get("sagemaker_file", "sagemaker.json"))
        lines.append("")
        lines.extend("    " + line if line else "" for line in estimator_snippet(m["sagemaker"]).splitlines())
        for note in m["sagemaker"].get("notes", []):
            lines.append("  note: %s" % note)
    return "\n".join(lines) + "\n"
