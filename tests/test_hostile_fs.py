"""Hostile file systems and odd inputs: nothing lost, nothing mislabelled, nothing hangs (issue 15, 5-8 and 13).

Cases that hung or ran out of memory before their fix run the real command line in a
subprocess with a timeout (``HANG``) and, where memory is at stake, an address-space
limit (``prlimit --as``): a regression fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

import imagefactory as fac
from conftest import REPO, SAMPLE, load_manifest, run_cli
from imgrec import recordio, storage
from imgrec.options import MAX_LABEL_WIDTH, OptionsError, folders_overlap
from imgrec.classmap import lookalike_pairs

# Seconds a job on a few dozen images may take before it counts as hung (it takes 2-5).
HANG = 120
# Address space for a job (it needs about 1 GiB; reading a 3 GiB file whole needs 3 GiB more).
MEMORY = 2 << 30


def errors_of(out: Path) -> dict[str, dict]:
    return {e["path"]: e for e in map(json.loads, (out / "errors.jsonl").read_text(encoding="utf-8").splitlines())}


def labels_by_path(out: Path) -> dict[str, int]:
    """{relpath: label} of every record, from the records themselves (header id -> .lst path)."""
    m = load_manifest(out)
    found = {}
    for doc in m["splits"].values():
        paths = {int(line.split("\t")[0]): line.split("\t")[-1]
                 for line in (out / doc["lst"]).read_text(encoding="utf-8").splitlines()}
        for shard in doc["shards"]:
            with open(out / shard["rec"], "rb") as f:
                for rec in recordio.read_records(f):
                    header, _ = recordio.unpack(rec.payload)
                    found[paths[header.id]] = int(header.label)
    return found


def cli(*args, memory: int = 0, preexec=None, pass_fds=()):
    """The command line in a subprocess that cannot hang the suite (and, with ``memory``, cannot take more)."""
    prefix = ["prlimit", "--as=%d" % memory] if memory else []
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        prefix + [sys.executable, "-m", "pipeline.run", *map(str, args)],
        capture_output=True, text=True, cwd=REPO, timeout=HANG, env=env, preexec_fn=preexec, pass_fds=pass_fds,
    )


def last_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def assert_one_line_usage_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    line = last_line(proc)
    assert line.startswith("error: "), proc.stderr
    for word in words:
        assert word in line, (word, line)
    return line


def two_classes(root: Path, n: int = 4) -> Path:
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / cls / ("%s_%d.jpg" % (cls, i))).write_bytes(fac.jpeg(48, 36, seed=i + (100 if cls == "dog" else 0)))
    return root


# ---------------------------------------------------------------- 5: output and input overlap


@pytest.mark.parametrize("spelling", ["inside", "symlink", "relative", "input-inside-output"])
def test_output_overlapping_input_is_refused_by_real_path(tmp_path, spelling):
    root = two_classes(tmp_path / "in")
    (tmp_path / "alias").symlink_to(root)
    output, expected = {
        "inside": (root / "out", "is inside --input"),
        "symlink": (tmp_path / "alias", "is the --input folder"),
        "relative": (Path(str(root / "cat") + "/../../in/./"), "is the --input folder"),
        "input-inside-output": (tmp_path, "is inside --output"),
    }[spelling]
    proc = cli("--input", root, "--output", output)
    assert_one_line_usage_error(proc, expected)
    assert not (root / "out").exists() and not (tmp_path / ".imgrec-output").exists()


def test_overlap_of_s3_prefixes_compares_bucket_and_prefix():
    assert "is the --input folder" in folders_overlap("s3://b/photos", "s3://b/photos/")
    assert "is inside --input" in folders_overlap("s3://b/photos/", "s3://b/photos/rec/")
    assert "is inside --output" in folders_overlap("s3://b/photos/in", "s3://b/photos")
    assert folders_overlap("s3://b/photos", "s3://b/photos-rec") == ""
    assert folders_overlap("s3://b/photos", "s3://other/photos") == ""
    assert folders_overlap("s3://b/photos", "/tmp/photos") == ""


def test_an_output_folder_is_never_listed_as_images(tmp_path):
    """An earlier output (with its preview PNGs) inside a class, or as a class, or as --input: never images."""
    root = two_classes(tmp_path / "in")
    old = tmp_path / "old"
    run_cli("--input", root, "--output", old)
    run_cli(old, module="pipeline.preview")
    assert list((old / "preview").glob("*.png"))
    shutil.copytree(old, root / "cat" / "old-run")
    shutil.copytree(old, root / "old-out")

    out = tmp_path / "out"
    proc = cli("--input", root, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert load_manifest(out)["classes"] == ["cat", "dog"]
    assert sorted(labels_by_path(out)) == sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))
    errors = errors_of(out)
    assert errors["cat/old-run"]["reason"] == "output_folder"
    assert errors["old-out"]["reason"] == "output_folder"

    proc = cli("--input", old, "--output", tmp_path / "again")
    assert_one_line_usage_error(proc, "is an output folder of this tool")


# ---------------------------------------------------------------- 6: links, loops, repeats


def test_folder_links_never_list_a_folder_twice_or_under_another_class(tmp_path):
    root = two_classes(tmp_path / "in")
    (root / "cat" / "sub").mkdir()
    (root / "cat" / "sub" / "deep.jpg").write_bytes(fac.jpeg(40, 30, seed=7))
    external = tmp_path / "elsewhere"
    external.mkdir()
    (external / "ext.jpg").write_bytes(fac.jpeg(40, 30, seed=8))
    (root / "cat" / "up").symlink_to("..")  # the input folder: would list dog/ again as cat
    (root / "cat" / "self").symlink_to(".")
    (root / "cat" / "dogs").symlink_to("../dog")  # another class folder
    (root / "cat" / "again").symlink_to("sub")  # a folder of its own class, listed already
    (root / "cat" / "ext1").symlink_to(external)  # a folder outside the input: followed, once
    (root / "cat" / "ext2").symlink_to(external)
    (root / "dog" / "grand").symlink_to(tmp_path)  # a parent of the input

    out = tmp_path / "out"
    proc = cli("--input", root, "--output", out)
    assert proc.returncode == 0, proc.stderr
    labels = labels_by_path(out)
    want = {str(p.relative_to(root)): ["cat", "dog"].index(p.relative_to(root).parts[0])
            for p in root.glob("*/*.jpg")}
    want.update({"cat/sub/deep.jpg": 0, "cat/ext1/ext.jpg": 0})
    assert labels == want
    reasons = {path: e["reason"] for path, e in errors_of(out).items()}
    assert reasons == {
        "cat/up": "symlink_loop",
        "cat/self": "symlink_loop",
        "cat/dogs": "repeated_folder",
        "cat/again": "repeated_folder",
        "cat/ext2": "repeated_folder",
        "dog/grand": "symlink_loop",
    }
    errors = errors_of(out)
    assert "input folder" in errors["cat/up"]["detail"]
    assert "'dog'" in errors["cat/dogs"]["detail"]
    assert "'sub'" in errors["cat/again"]["detail"]


@pytest.mark.parametrize("target", ["/sys/devices/system/cpu", "/sys/bus"])
def test_a_link_into_sys_ends_and_is_reported(tmp_path, target):
    """sysfs is full of links whose cycles do not pass through a parent of the folder listed.

    Listed by path, /sys/devices/system/cpu of a small machine gives two million entries
    (more with more CPUs) and /sys/bus does not end; each folder listed once, a few thousand.
    """
    if not os.path.isdir(target):
        pytest.skip("%s is not there" % target)
    root = two_classes(tmp_path / "in")
    (root / "cat" / "sys").symlink_to(target)
    out = tmp_path / "out"
    proc = cli("--input", root, "--output", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert sorted(labels_by_path(out)) == sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))
    errors = errors_of(out)
    assert all(p.startswith("cat/sys/") and e["reason"] in ("symlink_loop", "repeated_folder", "unreadable")
               for p, e in errors.items()), errors
    assert any(e["reason"] in ("symlink_loop", "repeated_folder") for e in errors.values())
    # every folder was listed once: no two folders the errors were found in are the same folder
    folders = {os.path.dirname(p) for p in errors}
    assert len({os.path.realpath(root / f) for f in folders}) == len(folders)


def test_walk_of_a_tree_deeper_than_the_bound_is_reported(tmp_path):
    top = tmp_path / "cls"
    deep = top
    for _ in range(storage.MAX_DEPTH + 2):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "x.jpg").write_bytes(b"x")
    (top / "ok.jpg").write_bytes(b"y")
    entries = list(storage.walk_files(str(top)))
    assert [e.relpath for e in entries if not e.error] == ["ok.jpg"]
    (bad,) = [e for e in entries if e.error]
    assert bad.error == "too_deep" and bad.relpath.count("/") == storage.MAX_DEPTH


def test_walk_through_a_linked_class_folder_still_stops_at_the_input(tmp_path):
    """The class folder itself is a link elsewhere; a link from there back to the input is still a loop."""
    root = tmp_path / "in"
    (root / "dog").mkdir(parents=True)
    (root / "dog" / "d.jpg").write_bytes(b"d")
    real_cat = tmp_path / "cats"
    real_cat.mkdir()
    (real_cat / "c.jpg").write_bytes(b"c")
    (real_cat / "back").symlink_to(root)
    (root / "cat").symlink_to(real_cat)
    entries = {e.relpath: e.error for e in storage.walk_files(str(root / "cat"), str(root))}
    assert entries == {"c.jpg": "", "back": "symlink_loop"}


# ---------------------------------------------------------------- 7: look-alike class names


NFC, NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")


@pytest.mark.parametrize("names,how", [((NFC, NFD), "Unicode normalisation"), (("Cat", "cat"), "only in case")])
def test_lookalike_class_folders_are_refused_unless_allowed(tmp_path, names, how):
    root = tmp_path / "in"
    for i, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for j in range(3):
            (root / name / ("%d.jpg" % j)).write_bytes(fac.jpeg(40, 30, seed=10 * i + j))
    out = tmp_path / "out"
    proc = cli("--input", root, "--output", out)
    line = assert_one_line_usage_error(proc, how, "--allow-lookalike-classes", ascii(names[0])[1:-1] if how != "only in case" else names[0])
    assert "class folders" in line and line.count("'") >= 4, line
    assert not (out / "manifest.json").exists()

    proc = cli("--input", root, "--output", out, "--allow-lookalike-classes")
    assert proc.returncode == 0, proc.stderr
    m = load_manifest(out)
    assert m["num_classes"] == 2
    assert len(m["warnings"]) == 1 and how in m["warnings"][0]
    summary = (out / "summary.txt").read_text(encoding="utf-8")
    assert "Warnings:" in summary and how in summary.split("Warnings:")[1]
    assert "Warnings:" in proc.stdout


def test_lookalike_class_names_in_a_label_file_are_refused(tmp_path):
    root = two_classes(tmp_path / "in")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\ncat/cat_0.jpg,Cat\ncat/cat_1.jpg,cat\ndog/dog_0.jpg,dog\n", encoding="utf-8")
    proc = cli("--input", root, "--output", tmp_path / "out", "--labels", labels)
    assert_one_line_usage_error(proc, "class names in", "'Cat' and 'cat'", "only in case")


def test_lookalike_pairs():
    assert lookalike_pairs(["cat", "dog"]) == []
    assert [(a, b) for a, b, _ in lookalike_pairs(["dog", "Cat", "cat", NFD, NFC])] == [("Cat", "cat"), (NFD, NFC)]
    assert lookalike_pairs(["ＣＡＴ", "cat"])[0][2] == "only in case or Unicode form"


# ---------------------------------------------------------------- 8: FIFOs, devices, huge files


def test_fifo_device_and_huge_sparse_file_are_skipped_without_hanging_or_reading(tmp_path):
    root = two_classes(tmp_path / "in")
    os.mkfifo(root / "cat" / "a.jpg")
    (root / "cat" / "b.jpg").symlink_to("/dev/zero")
    with open(root / "dog" / "d.jpg", "wb") as f:
        f.truncate(3 << 30)  # 3 GiB, sparse: no disk space, but a read of it takes 3 GiB of memory
    out = tmp_path / "out"
    proc = cli("--input", root, "--output", out, memory=MEMORY)
    assert proc.returncode == 0, proc.stderr
    errors = errors_of(out)
    assert {p: (e["reason"], e["stage"]) for p, e in errors.items()} == {
        "cat/a.jpg": ("not_regular_file", "list"),
        "cat/b.jpg": ("not_regular_file", "list"),
        "dog/d.jpg": ("too_large", "list"),
    }
    assert "FIFO" in errors["cat/a.jpg"]["detail"] and "character device" in errors["cat/b.jpg"]["detail"]
    assert "--max-file-size-mb" in errors["dog/d.jpg"]["detail"]
    assert len(labels_by_path(out)) == 8


def test_files_named_in_a_label_file_are_checked_when_read(tmp_path):
    """With --labels the listing does not check sizes: the read refuses a file over the limit before reading it."""
    root = two_classes(tmp_path / "in")
    with open(root / "dog" / "d.jpg", "wb") as f:
        f.truncate(3 << 30)
    os.mkfifo(root / "cat" / "a.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("".join("%s,%s\n" % (p, p.split("/")[0]) for p in
                              ["cat/cat_0.jpg", "cat/a.jpg", "dog/dog_0.jpg", "dog/d.jpg"]), encoding="utf-8")
    out = tmp_path / "out"
    proc = cli("--input", root, "--output", out, "--labels", labels, memory=MEMORY)
    assert proc.returncode == 0, proc.stderr
    errors = errors_of(out)
    assert errors["dog/d.jpg"]["reason"] == "too_large" and errors["dog/d.jpg"]["stage"] == "read"
    assert errors["cat/a.jpg"]["reason"] == "not_regular_file"
    assert sorted(labels_by_path(out)) == ["cat/cat_0.jpg", "dog/dog_0.jpg"]


def test_max_file_size_option(tmp_path):
    root = two_classes(tmp_path / "in")
    (root / "cat" / "big.jpg").write_bytes(fac.jpeg(1600, 1200, seed=3))  # about 1 MiB
    out = tmp_path / "out"
    proc = cli("--input", root, "--output", out, "--max-file-size-mb", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert errors_of(out)["cat/big.jpg"]["reason"] == "too_large"
    assert load_manifest(out)["options"]["max_file_size_mb"] == 0.5
    for bad in ("0", "-1", "513"):
        assert_one_line_usage_error(cli("--input", root, "--output", out, "--max-file-size-mb", bad),
                                    "--max-file-size-mb")


READ_PROBE = """
import sys
from imgrec import storage
from imgrec.shardwriter import read_input
from imgrec.images import BadImage
try:
    read_input(sys.argv[1], int(sys.argv[2]))
except BadImage as exc:
    print(exc.reason)
"""


def probe_read(path, max_bytes=0) -> str:
    """What reading one input says, in a subprocess (so that a blocking open fails the test, not hangs it)."""
    proc = subprocess.run([sys.executable, "-c", READ_PROBE, str(path), str(max_bytes)], capture_output=True,
                          text=True, cwd=REPO, timeout=HANG, preexec_fn=lambda: _limit_memory(MEMORY))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _limit_memory(limit):
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_reading_checks_what_was_opened(tmp_path):
    """Only regular files are read, whatever the listing said (a file swapped for a FIFO after listing)."""
    fifo = tmp_path / "a.jpg"
    os.mkfifo(fifo)
    assert probe_read(fifo) == "not_regular_file"
    assert probe_read("/dev/zero") == "not_regular_file"
    sparse = tmp_path / "d.jpg"
    with open(sparse, "wb") as f:
        f.truncate(3 << 30)
    assert probe_read(sparse, 1 << 20) == "too_large"
    small = tmp_path / "s.jpg"
    small.write_bytes(b"x" * 100)
    assert storage.read_bytes(str(small), 100) == b"x" * 100
    small.write_bytes(b"x" * 101)
    with pytest.raises(storage.UnusableFileError, match="101 bytes, more than the limit of 100"):
        storage.read_bytes(str(small), 100)


@pytest.mark.parametrize("flag", ["--labels", "--class-map"])
def test_label_file_from_dev_zero_is_refused_at_once(tmp_path, flag):
    root = two_classes(tmp_path / "in")
    proc = cli("--input", root, "--output", tmp_path / "out", flag, "/dev/zero", memory=MEMORY)
    assert_one_line_usage_error(proc, flag + " /dev/zero", "character device", "save it to a file")


def test_label_file_from_a_pipe_is_refused_with_one_line(tmp_path):
    """``--labels <(cat labels.csv)``: the label file is read twice (scan, then chunks), which a pipe cannot be."""
    root = two_classes(tmp_path / "in")
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as w:
        w.write("cat/cat_0.jpg,cat\ndog/dog_0.jpg,dog\n")
    try:
        proc = cli("--input", root, "--output", tmp_path / "out", "--labels", "/dev/fd/%d" % read_end,
                   pass_fds=(read_end,))
    finally:
        os.close(read_end)
    assert_one_line_usage_error(proc, "--labels /dev/fd/%d" % read_end, "FIFO", "save it to a file")


# ---------------------------------------------------------------- 13: clear errors


def test_non_utf8_class_folder_is_reported_and_the_rest_converted(tmp_path):
    root = two_classes(tmp_path / "in")
    bad = os.path.join(os.fsencode(root), b"caf\xfe")
    os.mkdir(bad)
    with open(os.path.join(bad, b"x.jpg"), "wb") as f:
        f.write(fac.jpeg(40, 30, seed=5))
    out = tmp_path / "out"
    proc = cli("--input", root, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert load_manifest(out)["classes"] == ["cat", "dog"]
    (error,) = errors_of(out).values()
    assert error["reason"] == "non_utf8_name" and error["path"] == "caf\\udcfe" and error["stage"] == "list"
    assert len(labels_by_path(out)) == 8


def test_non_utf8_names_with_a_label_file(tmp_path):
    """A top-level folder and a file whose names are not UTF-8: reported or unlisted, never a failed job."""
    root = two_classes(tmp_path / "in")
    bad = os.path.join(os.fsencode(root), b"caf\xfe")
    os.mkdir(bad)
    with open(os.path.join(bad, b"x.jpg"), "wb") as f:
        f.write(fac.jpeg(40, 30, seed=5))
    with open(os.path.join(os.fsencode(root), b"cat", b"y\xfe.jpg"), "wb") as f:
        f.write(fac.jpeg(40, 30, seed=6))
    labels = tmp_path / "l.csv"
    labels.write_text("cat/cat_0.jpg,cat\ndog/dog_0.jpg,dog\n")
    out = tmp_path / "out"
    proc = cli("--input", root, "--output", out, "--labels", labels)
    assert proc.returncode == 0, proc.stderr
    assert {p: e["reason"] for p, e in errors_of(out).items()} == {"caf\\udcfe": "non_utf8_name"}
    assert sorted(labels_by_path(out)) == ["cat/cat_0.jpg", "dog/dog_0.jpg"]


def test_output_that_is_a_file_or_under_a_file_is_refused(tmp_path):
    root = two_classes(tmp_path / "in")
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert_one_line_usage_error(cli("--input", root, "--output", afile), str(afile), "is a file, not a folder")
    assert_one_line_usage_error(cli("--input", root, "--output", afile / "out"), "is under %s, which is a file" % afile)
    assert afile.read_text() == "mine"


def _drop_root_powers():
    # root writes anywhere: drop the capabilities that let it, as for an ordinary user
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def test_output_that_cannot_be_written_is_refused(tmp_path):
    root = two_classes(tmp_path / "in")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    proc = subprocess.run(
        _drop_root_powers() + [sys.executable, "-m", "pipeline.run", "--input", str(root), "--output", str(locked / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=HANG,
    )
    assert_one_line_usage_error(proc, "cannot write to --output %s" % (locked / "out"), "permission denied")


def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


# Runs inside a private mount namespace: the mounts vanish with the process.
IN_NAMESPACE = """
set -e
mkdir -p "$MNT"
mount -t tmpfs -o size=$SIZE tmpfs "$MNT"
mkdir -p "$MNT/out"
if [ "$RO" = 1 ]; then mount -o remount,ro "$MNT"; fi
set +e
"$PY" -m pipeline.run --input "$IN" --output "$MNT/out" --quiet
echo "rc=$?" >&2
find "$MNT" -name '*.tmp-*' -printf 'left:%P\\n' >&2
"""


def _run_on_tmpfs(root: Path, mnt: Path, size: str, read_only: bool = False):
    env = dict(os.environ, PYTHONWARNINGS="ignore", MNT=str(mnt), SIZE=size, RO="1" if read_only else "0",
               PY=sys.executable, IN=str(root))
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", IN_NAMESPACE],
                          capture_output=True, text=True, cwd=REPO, timeout=HANG, env=env)


@pytest.mark.skipif(not _can_mount(), reason="needs root and mount namespaces (unshare) to mount a tmpfs")
def test_read_only_output_mount_is_refused(tmp_path):
    root = two_classes(tmp_path / "in")
    proc = _run_on_tmpfs(root, tmp_path / "mnt", "1m", read_only=True)
    assert "rc=2" in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and "read-only file system" in lines[0] and str(tmp_path / "mnt" / "out") in lines[0]
    assert "Traceback" not in proc.stderr


def big_tree(root: Path, n=24) -> Path:
    for i in range(n):
        d = root / ("c%d" % (i % 2))
        d.mkdir(parents=True, exist_ok=True)
        (d / ("%d.jpg" % i)).write_bytes(fac.jpeg(400, 300, seed=i))  # about 65 KiB each
    return root


@pytest.mark.skipif(not _can_mount(), reason="needs root and mount namespaces (unshare) to mount a tmpfs")
def test_disk_full_names_the_file_and_leaves_no_temporary_file(tmp_path):
    root = big_tree(tmp_path / "in")
    proc = _run_on_tmpfs(root, tmp_path / "mnt", "1m")
    assert "rc=2" in proc.stderr, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: cannot write %s/" % (tmp_path / "mnt" / "out")), errors[0]
    assert "no space left on the device" in errors[0]
    assert "left:" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def _file_size_limit(limit):
    def preexec():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_file_size_limit_names_the_file_and_leaves_no_temporary_file(tmp_path):
    root = big_tree(tmp_path / "in")
    out = tmp_path / "out"
    proc = cli("--input", root, "--output", out, "--images-per-shard", "100", preexec=_file_size_limit(512 << 10))
    line = assert_one_line_usage_error(proc, "cannot write %s/" % out, "file too large")
    assert ".rec" in line
    assert not [p for p in out.rglob("*") if storage.TMP_MARK in p.name], sorted(out.rglob("*"))
    assert not (out / "manifest.json").exists()


def test_label_width_has_an_upper_bound(tmp_path):
    root = two_classes(tmp_path / "in")
    labels = tmp_path / "l.csv"
    labels.write_text("cat/cat_0.jpg,0\ndog/dog_0.jpg,1\n")
    proc = cli("--input", root, "--output", tmp_path / "out", "--labels", labels, "--label-format", "class-ids",
               "--label-width", str(MAX_LABEL_WIDTH + 1))
    assert_one_line_usage_error(proc, "--label-width", str(MAX_LABEL_WIDTH))
    proc = cli("--input", root, "--output", tmp_path / "out", "--labels", labels, "--label-format", "class-ids",
               "--label-width", str(MAX_LABEL_WIDTH))
    assert proc.returncode == 0, proc.stderr
