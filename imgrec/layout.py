"""Where every output file goes, relative to the output root. One place for names.

    OUT/train/data-00000-of-00004.rec        only .rec files: a SageMaker channel
    OUT/validation/...
    OUT/idx/train/data-00000-of-00004.idx    (or beside the .rec with --idx-beside-rec)
    OUT/idx/train-merged.idx                 one index over all shards, for DALI
    OUT/lists/train.lst                      im2rec-compatible list
    (after --incremental run N: OUT/idx/train-merged-incNNNN.idx and OUT/lists/train-incNNNN.lst, see finalize)
    OUT/classes.json, OUT/labels.txt         the class map
    OUT/errors.jsonl                         every skipped input and why
    OUT/manifest.json                        written last: its presence means complete
    OUT/summary.txt
    OUT/report.jsonl                         with --labels or --check-duplicates: missing, unlisted, duplicates, conflicts
    OUT/sagemaker.json                       channels and hyperparameters for SageMaker's image classification
    OUT/single/train/data.rec                with --single-file: the shards of a split in one file (its own channel)
    OUT/single/idx/train/data.idx            (or beside the .rec with --idx-beside-rec)
    OUT/_work/                               completion records and listings (kept for --resume)
"""

from __future__ import annotations

from dataclasses import dataclass

from imgrec.planning import shard_name

MANIFEST = "manifest.json"
CLASSES_JSON = "classes.json"
LABELS_TXT = "labels.txt"
ERRORS = "errors.jsonl"
SUMMARY = "summary.txt"
REPORT = "report.jsonl"
SAGEMAKER = "sagemaker.json"
SINGLE = "single"
WORK = "_work"
# Marks a folder as this tool's output: such a folder is never listed as images, and a re-run after a crash
# (no manifest yet) is told apart from a folder of someone else's files.
OWNER_MARK = ".imgrec-output"
# Why a stage stopped the job (imgrec.workrecords.Failure), for the launcher.
FAILURES = WORK + "/failures"
# What the files of --incremental run N carry in their names (shards: data-inc0001-00000-of-00002.rec).
INCREMENT_SUFFIX = "-inc%04d"


@dataclass(frozen=True)
class Layout:
    name: str = "data"
    idx_beside_rec: bool = False
    # --incremental run N > 0 writes its lists and merged indexes under names of their own, so the
    # manifest of run N-1 keeps pointing at files that do not change until it is replaced
    increment: int = 0

    def _state(self) -> str:
        return INCREMENT_SUFFIX % self.increment if self.increment else ""

    def rec(self, split: str, shard: int, shards: int) -> str:
        return "%s/%s" % (split, shard_name(self.name, shard, shards, "rec"))

    def idx(self, split: str, shard: int, shards: int) -> str:
        folder = split if self.idx_beside_rec else "idx/%s" % split
        return "%s/%s" % (folder, shard_name(self.name, shard, shards, "idx"))

    def merged_idx(self, split: str) -> str:
        return "idx/%s-merged%s.idx" % (split, self._state())

    def single_rec(self, split: str) -> str:
        return "%s/%s/%s.rec" % (SINGLE, split, self.name)

    def single_idx(self, split: str) -> str:
        folder = "%s/%s" % (SINGLE, split) if self.idx_beside_rec else "%s/idx/%s" % (SINGLE, split)
        return "%s/%s.idx" % (folder, self.name)

    def lst(self, split: str) -> str:
        return "lists/%s%s.lst" % (split, self._state())

    def shard_record(self, split: str, shard: int, shards: int) -> str:
        return "%s/shards/%s-%s" % (WORK, split, shard_name(self.name, shard, shards, "json"))

    def shard_lst(self, split: str, shard: int, shards: int) -> str:
        """The .lst lines of a shard's records (beside its completion record, until the split's list is written)."""
        return "%s/shards/%s-%s" % (WORK, split, shard_name(self.name, shard, shards, "lst"))

    def shard_found(self, split: str, shard: int, shards: int) -> str:
        """The report items found while writing a shard (beside its completion record)."""
        return "%s/shards/%s-%s" % (WORK, split, shard_name(self.name, shard, shards, "found.jsonl"))

    def listing_record(self, class_index: int) -> str:
        return "%s/listing/class-%06d.json" % (WORK, class_index)

    def data_folders(self, splits) -> list[str]:
        """Folders whose stale shard files must go when a new dataset replaces an old one."""
        out = list(splits)
        if not self.idx_beside_rec:
            out += ["idx/%s" % s for s in splits]
        return out
