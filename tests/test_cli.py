"""The command line: misspelt flags, --version and console scripts, path spellings, unsupported schemes.

Through the real commands (``python -m pipeline.X`` in a subprocess), plus unit tests of
``pipeline.cli`` and of how a dataset's identity names places (``imgrec.options``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE, load_manifest, run_cli
from imgrec import __version__
from imgrec.options import OptionsError, check_location, identity_changes, location_key
from pipeline import cli

COMMANDS = ("pipeline.run", "pipeline.verify", "pipeline.preview", "pipeline.im2rec")
# A dataset written by the code of commit 3be9796 (before --max-file-size-mb and --refs-root), from
# six sample photos copied to photos/ and converted from their parent folder with
#   python -m pipeline.run --input photos/ --output out --quiet
LEGACY = REPO / "tests" / "fixtures" / "dataset-3be9796" / "out"


def run_in(cwd: Path, *args, module: str = "pipeline.run", check: bool = True) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` run from ``cwd`` (relative paths mean what they mean to a user there)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError("%s %s exited %d\n%s%s" % (module, args, proc.returncode, proc.stdout, proc.stderr))
    return proc


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# ---------------------------------------------------------------- misspelt and unknown flags


def test_a_misspelt_flag_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--input", SAMPLE, "--output", out, "--resise", "256", check=False)
    assert one_error_line(proc) == "error: unrecognized arguments: --resise (did you mean --resize?)"
    assert not out.exists()


@pytest.mark.parametrize(
    "args, line",
    [
        (["--images_per_shard", "3"], "unrecognized arguments: --images_per_shard (did you mean --images-per-shard?)"),
        (["--runnr", "DirectRunner"], "unrecognized arguments: --runnr (did you mean --runner?)"),
        (["--dask_client_addres=tcp://h:8786"],
         "unrecognized arguments: --dask_client_addres (did you mean --dask_client_address?)"),
        (["--inptu", "x"], "unrecognized arguments: --inptu (did you mean --input?)"),
        (["--resiz", "256"], "unrecognized arguments: --resiz (did you mean --resize?)"),  # no abbreviations
        (["--dry_run"], "--dry_run is Beam's own option, not this job's: did you mean --dry-run?"),
        (["--s3_endpoint_url=http://minio:9000"],
         "--s3_endpoint_url is Beam's own option, not this job's: did you mean --s3-endpoint-url?"),
        (["--direct_num_workers", "two"], "argument --direct_num_workers: invalid int value: 'two'"),
        (["--resize", "big"], "argument --resize: invalid int value: 'big'"),
        (["photos"], "unrecognized arguments: photos"),
    ],
)
def test_unknown_flags_and_bad_values_are_one_line(tmp_path, args, line):
    proc = run_cli("--input", SAMPLE, "--output", tmp_path / "out", *args, check=False)
    assert one_error_line(proc) == "error: " + line
    assert not (tmp_path / "out").exists()


def test_beam_flags_reach_beam_and_the_job_runs(tmp_path):
    out = tmp_path / "out"
    run_cli("--input", SAMPLE, "--output", out, "--quiet", "--direct_num_workers=1", "--experiments", "a",
            "--experiments=b", "--project", "p", "--no_save_main_session")
    assert sum(s["records"] for s in load_manifest(out)["splits"].values()) == 30


@pytest.mark.parametrize(
    "flags",
    [
        ["--runner=FlinkRunner", "--flink_master=host:8081", "--parallelism=4", "--flink_version=1.19"],
        ["--runner", "SparkRunner", "--spark_master_url", "spark://h:7077", "--spark_submit_uber_jar"],
        ["--runner=PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=EXTERNAL",
         "--environment_config=localhost:50000", "--sdk_worker_parallelism=2"],
        ["--runner=DataflowRunner", "--project=p", "--region=europe-west1", "--temp_location=gs://b/tmp",
         "--sdk_container_image=img:1", "--sdk_location=container", "--num_workers=3", "--label=team=ml"],
        ["--runner=PrismRunner", "--prism_location=/opt/prism", "--direct_num_workers=2", "--experiments=x"],
    ],
)
def test_every_runners_flags_pass(flags):
    cli.check_beam_args(flags)


def test_the_dask_runners_flags_pass_before_it_is_imported():
    """DaskOptions exist only once Beam's Dask runner is imported: the check imports it when a flag is not found."""
    code = (
        "import sys\n"
        "from pipeline.cli import check_beam_args\n"
        "assert 'apache_beam.runners.dask.dask_runner' not in sys.modules\n"
        "check_beam_args(['--runner=DaskRunner', '--dask_client_address=tcp://h:8786', '--dask_npartitions', '8'])\n"
        "check_beam_args(['--direct_num_workers=2'])\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_a_configs_pipeline_options_are_checked_like_flags(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("threads: 1\npipeline_options:\n  runnr: DirectRunner\n")
    proc = run_cli("--config", config, "--input", SAMPLE, "--output", tmp_path / "out", check=False)
    assert one_error_line(proc) == (
        "error: --config %s: pipeline_options: unrecognized arguments: --runnr (did you mean --runner?)" % config)
    config.write_text("pipeline_options:\n  resize: 256\n")
    proc = run_cli("--config", config, "--input", SAMPLE, "--output", tmp_path / "out", check=False)
    assert one_error_line(proc) == ("error: --config %s: pipeline_options: --resize is an option of this job, not of "
                                    "Beam: give it outside pipeline_options" % config)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "module, args, line",
    [
        ("pipeline.verify", ["OUT", "--no-decod"], "unrecognized arguments: --no-decod (did you mean --no-decode?)"),
        ("pipeline.verify", [], "the following arguments are required: OUT"),
        ("pipeline.preview", ["OUT", "--per-clas", "3"], "unrecognized arguments: --per-clas (did you mean --per-class?)"),
        ("pipeline.im2rec", ["p", "root", "--num-threads", "2"],
         "unrecognized arguments: --num-threads (did you mean --num-thread?)"),
        ("pipeline.im2rec", ["p", "root", "--list", "--recursve"],
         "unrecognized arguments: --recursve (did you mean --recursive?)"),
    ],
)
def test_other_commands_name_the_nearest_flag(tmp_path, module, args, line):
    proc = run_in(tmp_path, *args, module=module, check=False)
    assert one_error_line(proc) == "error: " + line
    assert sorted(os.listdir(tmp_path)) == []


def test_nearest_treats_dash_and_underscore_alike():
    assert cli.nearest("--images_per_shard", ["--images-per-shard", "--shard-size-mb"]) == "--images-per-shard"
    assert cli.nearest("--direct-num-workers", ["--direct_num_workers"]) == "--direct_num_workers"
    assert cli.nearest("--zzzzzz", ["--resize"]) is None
    assert cli.unrecognized(["--resise", "256", "--qualty=9"], ["--resize", "--quality"]) == (
        "unrecognized arguments: --resise (did you mean --resize?) --qualty (did you mean --quality?)")


# ---------------------------------------------------------------- the command's own process


_SAMPLER_PERIOD = """
import sys
from apache_beam.utils import counters
from apache_beam.runners.worker import statesampler
import %s
try:
    %s
finally:
    print(statesampler.StateSampler("step", counters.CounterFactory()).sampling_period_ms, flush=True)
"""


def test_the_commands_process_ends_beams_bundles_without_waiting_on_its_sampler():
    """pipeline.run's main() has Beam's state sampler look every 10 ms (a long bundle's end waited up to 200 ms);
    a process that only imports the library keeps Beam's default."""
    def period(module: str, call: str) -> int:
        proc = subprocess.run([sys.executable, "-c", _SAMPLER_PERIOD % (module, call)], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert proc.stdout.split(), proc.stderr
        return int(proc.stdout.split()[-1])

    from pipeline.tuning import STATE_SAMPLING_MS

    # the command's own entry point, as `python -m pipeline.run` calls it (main() ends the process itself)
    main = "import os; os._exit = lambda code: None; sys.argv = ['pipeline.run', '--version']; pipeline.run.main()"
    assert period("pipeline.run", main) == STATE_SAMPLING_MS == 10
    assert period("pipeline.api", "pass") == 200


_BEAM_MODULES = """
import os, sys
from imgrec.quiet import LOCAL_RUN_SKIPS
def report(code=0):
    print(" ".join(sorted(m for m in LOCAL_RUN_SKIPS if m in sys.modules)) or "-", flush=True)
os._exit = report
sys.argv = %r
try:
    %s
except SystemExit:  # --version
    pass
report()
"""


def beam_integrations_imported(argv: list[str], code: str) -> list[str]:
    """Which of Beam's optional integrations a process has imported: ``code`` run with ``sys.argv = argv``."""
    proc = subprocess.run([sys.executable, "-c", _BEAM_MODULES % (argv, code)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip(), proc.stderr
    return [m for m in proc.stdout.splitlines()[-1].split() if m != "-"]


def test_the_command_on_the_local_runner_imports_beam_without_its_optional_integrations(tmp_path):
    """python -m pipeline.run (and the imgrec-convert script) on the local runner leaves out Beam's GCP, S3,
    HDFS, Azure, MongoDB and Arrow modules (0.2-0.4 s of a small run); a cluster runner and a library
    process get Beam whole."""
    from imgrec.quiet import LOCAL_RUN_SKIPS

    as_module = "import runpy; runpy.run_module('pipeline.run', run_name='__main__')"
    job = ["pipeline.run", "--input", str(SAMPLE), "--output", str(tmp_path / "out"), "--pass-through", "--quiet"]
    assert beam_integrations_imported(job, as_module) == []
    assert (tmp_path / "out" / "manifest.json").is_file()  # ... and the job ran to its end
    script = ["/venv/bin/imgrec-convert", "--version"]
    assert beam_integrations_imported(script, "from pipeline.run import main; main()") == []
    whole = beam_integrations_imported(["notebook"], "import pipeline.api")
    # (those whose packages this environment has: boto3, pyarrow, pymongo and Beam's own BigQuery module)
    assert {"apache_beam.io.aws.s3filesystem", "pyarrow"} <= set(whole) <= LOCAL_RUN_SKIPS
    portable = ["pipeline.run", "--runner=PortableRunner", "--version"]
    assert beam_integrations_imported(portable, as_module) == whole


def test_the_lean_import_refuses_modules_only_while_beam_is_imported():
    code = ("from imgrec.quiet import import_beam; import_beam(lean=True); "
            "import sys; before = 'pyarrow' in sys.modules; import pyarrow; print(before, 'pyarrow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "True"], proc.stderr
    assert "bson" not in proc.stderr and "apitools" not in proc.stderr  # Beam's lines about what it left out


def test_the_lean_import_puts_off_httplib2_until_it_is_used():
    """httplib2 (and pyparsing, which it imports) runs only when one of its names is used, and then works."""
    code = ("from imgrec.quiet import import_beam; import_beam(lean=%s); import sys; "
            "ran = lambda: 'pyparsing' in sys.modules; before = ran(); "
            "from apache_beam.internal import http_client; "
            "print(before, ran(), type(http_client.get_new_http()).__name__, ran())")
    lean = subprocess.run([sys.executable, "-c", code % True], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert lean.stdout.split() == ["False", "False", "Http", "True"], lean.stderr
    whole = subprocess.run([sys.executable, "-c", code % False], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert whole.stdout.split() == ["True", "True", "Http", "True"], whole.stderr


def test_runs_locally_reads_the_runner_flag_both_ways():
    from imgrec.quiet import runs_locally

    assert runs_locally(["--input", "x"])
    assert runs_locally(["--runner=DirectRunner"]) and runs_locally(["--runner", "direct"])
    assert not runs_locally(["--runner=FlinkRunner"]) and not runs_locally(["--runner", "DaskRunner"])


# ---------------------------------------------------------------- --version and console scripts


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_prints_its_version(module):
    proc = run_cli("--version", module=module)
    assert proc.stdout == "imgrec-beam %s\n" % __version__


def console_scripts() -> dict[str, str]:
    """setup.py's console scripts: name -> 'module:function'."""
    text = (REPO / "setup.py").read_text()
    block = re.search(r'"console_scripts":\s*\[(.*?)\]', text, re.S)
    assert block, "setup.py declares no console_scripts"
    return dict(re.findall(r'"([\w-]+)=([\w.]+:\w+)"', block.group(1)))


def test_setup_py_has_a_console_script_for_every_command():
    scripts = console_scripts()
    assert scripts == {
        "imgrec-convert": "pipeline.run:main",
        "imgrec-verify": "pipeline.verify:main",
        "imgrec-preview": "pipeline.preview:main",
        "imgrec-im2rec": "pipeline.im2rec:main",
    }
    readme = (REPO / "README.md").read_text()
    for name, target in scripts.items():
        module = target.split(":")[0]
        assert re.search(r"\| `%s` \| `python -m %s` \|" % (name, module), readme), "README's Commands list: " + name


@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_each_console_scripts_entry_point_prints_the_version(name):
    """What the installed script does (import the function, call it with sys.argv set), from this checkout."""
    module, function = console_scripts()[name].split(":")
    code = "import sys; sys.argv = [%r, '--version']; from %s import %s; sys.exit(%s())" % (name, module, function, function)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert (proc.returncode, proc.stdout) == (0, "imgrec-beam %s\n" % __version__), proc.stderr


def test_the_installed_console_scripts_print_the_version():
    """Every script of setup.py that the environment has installed, run as installed (with this checkout's code)."""
    bindir = Path(sys.executable).parent
    installed = [name for name in console_scripts() if (bindir / name).exists()]
    assert "imgrec-convert" in installed, "the package is not installed in %s" % bindir
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    for name in installed:
        proc = subprocess.run([str(bindir / name), "--version"], capture_output=True, text=True, env=env, timeout=300)
        assert (proc.returncode, proc.stdout) == (0, "imgrec-beam %s\n" % __version__), (name, proc.stderr)


def test_setup_py_takes_its_version_from_the_package():
    proc = subprocess.run([sys.executable, "setup.py", "--version"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == __version__, proc.stderr


# ---------------------------------------------------------------- path spellings name one dataset


@pytest.fixture
def photos_here(tmp_path) -> Path:
    shutil.copytree(SAMPLE, tmp_path / "photos")
    return tmp_path


@pytest.mark.parametrize("again", ["./photos/", "photos", "{abs}/photos", "{abs}/photos/", "./photos/../photos"])
def test_every_spelling_of_the_input_is_the_same_dataset(photos_here, again):
    run_in(photos_here, "--input", "photos/", "--output", "out", "--quiet")
    first = {p.name: p.read_bytes() for p in (photos_here / "out").rglob("*.rec")}
    again = again.format(abs=photos_here)
    # no --overwrite: a refusal ("already holds a different dataset") would fail the run
    run_in(photos_here, "--input", again, "--output", "out", "--quiet")
    assert {p.name: p.read_bytes() for p in (photos_here / "out").rglob("*.rec")} == first
    proc = run_in(photos_here, "--input", again, "--output", str(photos_here / "out") + "/", "--incremental")
    assert "nothing new" in proc.stdout.lower() + proc.stderr.lower()
    assert load_manifest(photos_here / "out")["identity"]["input"] == str(photos_here / "photos")


def test_another_folder_is_still_another_dataset(photos_here):
    shutil.copytree(photos_here / "photos", photos_here / "copy")
    run_in(photos_here, "--input", "photos", "--output", "out", "--quiet")
    proc = run_in(photos_here, "--input", "copy", "--output", "out", "--quiet", check=False)
    assert proc.returncode == 2 and "already holds a different dataset" in proc.stderr
    proc = run_in(photos_here, "--input", "copy", "--output", "out", "--incremental", check=False)
    assert proc.returncode == 2 and "these differ: input" in proc.stderr


def test_an_input_link_moved_to_the_next_snapshot_stays_the_same_dataset(tmp_path):
    """Symbolic links are not resolved for the identity: a scheduled job names 'latest', whatever it points at."""
    (tmp_path / "snap1").mkdir()
    shutil.copytree(SAMPLE / "cat", tmp_path / "snap1" / "cat")
    shutil.copytree(SAMPLE / "rocket", tmp_path / "snap1" / "rocket")
    shutil.copytree(tmp_path / "snap1", tmp_path / "snap2")
    shutil.copy(SAMPLE / "flower" / "flower_00.jpg", tmp_path / "snap2" / "cat" / "new.jpg")
    os.symlink("snap1", tmp_path / "latest")
    run_in(tmp_path, "--input", "latest", "--output", "out", "--incremental", "--quiet")
    os.remove(tmp_path / "latest")
    os.symlink("snap2", tmp_path / "latest")
    run_in(tmp_path, "--input", "latest", "--output", "out", "--incremental", "--quiet")
    m = load_manifest(tmp_path / "out")
    assert m["increments"] == 1 and sum(s["records"] for s in m["splits"].values()) == 13


def test_location_key_spells_each_place_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = str(tmp_path)
    for spelling in ("photos", "./photos/", "photos//", here + "/photos", "x/../photos"):
        assert location_key(spelling) == here + "/photos", spelling
    assert location_key("s3://b/photos/") == location_key("s3://b/photos") == "s3://b/photos"
    assert location_key("s3://b/a//b/") == "s3://b/a//b"  # S3 keys are plain strings: a//b is not a/b
    os.symlink(here, tmp_path / "link")
    assert location_key("link/photos") == here + "/link/photos"  # links kept: the folder the user names


def test_identity_changes_reads_every_earlier_identity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    legacy = load_manifest(LEGACY)["identity"]
    assert legacy["input"] == "photos/" and "refs_root" not in legacy and "max_file_size_mb" not in legacy
    from imgrec.options import from_kwargs

    now = from_kwargs(input=str(tmp_path / "photos"), output="out").identity()
    assert identity_changes(legacy, now) == []
    # written by the code just before this: --refs-root always recorded, the input as typed
    main_era = dict(legacy, input="./photos", refs_root="", max_file_size_mb=256.0)
    assert identity_changes(main_era, now) == []
    assert identity_changes(dict(legacy, refs_root="s3://b/x/"), now) == ["refs_root"]
    assert identity_changes(dict(legacy, max_file_size_mb=64.0), now) == ["max_file_size_mb"]
    assert identity_changes(dict(legacy, input="other"), now) == ["input"]
    assert identity_changes(dict(legacy, name="imagenet"), now) == ["name"]
    assert identity_changes(None, now) != [] and identity_changes([], now) != []  # a broken manifest


# ---------------------------------------------------------------- a dataset of an earlier version


@pytest.fixture
def legacy(tmp_path) -> Path:
    """The 3be9796 dataset in tmp_path/out, its six photos in tmp_path/photos."""
    for cls in ("flower", "rocket"):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(3):
            shutil.copy(SAMPLE / cls / ("%s_%02d.jpg" % (cls, i)), tmp_path / "photos" / cls)
    shutil.copytree(LEGACY, tmp_path / "out")
    return tmp_path


def legacy_files() -> dict[str, bytes]:
    return {str(p.relative_to(LEGACY)): p.read_bytes() for p in LEGACY.rglob("*") if p.is_file()}


@pytest.mark.parametrize("spelling", ["./photos", "{abs}/photos/"])
def test_incremental_adds_to_a_dataset_of_commit_3be9796(legacy, spelling):
    for cls in ("flower", "rocket"):
        shutil.copy(SAMPLE / cls / ("%s_03.jpg" % cls), legacy / "photos" / cls)
    run_in(legacy, "--input", spelling.format(abs=legacy), "--output", "out", "--incremental", "--quiet")
    m = load_manifest(legacy / "out")
    assert m["increments"] == 1
    assert sum(s["records"] for s in m["splits"].values()) == 8
    for rel, data in legacy_files().items():  # the old shards are not touched
        if rel.endswith((".rec", ".idx")) and "merged" not in rel:
            assert (legacy / "out" / rel).read_bytes() == data, rel
    run_in(legacy, "out", module="pipeline.verify")


def test_a_rerun_over_a_dataset_of_commit_3be9796_is_the_same_dataset_and_bytes(legacy, monkeypatch):
    monkeypatch.chdir(legacy)  # where the dataset's input, photos/, was named
    run_in(legacy, "--input", legacy / "photos", "--output", "out", "--quiet")  # no --overwrite needed
    for rel, data in legacy_files().items():
        if rel.endswith((".rec", ".idx", ".lst", "classes.json", "labels.txt")):
            assert (legacy / "out" / rel).read_bytes() == data, rel
    old, new = load_manifest(LEGACY), load_manifest(legacy / "out")
    assert identity_changes(old["identity"], new["identity"]) == []
    assert {k: v for k, v in new["identity"].items() if k != "input"} == {
        k: v for k, v in old["identity"].items() if k != "input"}


# ---------------------------------------------------------------- schemes we do not read or write


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--input", "gs://bucket/photos", "the gs:// scheme is not supported; use a local path or an "
                                          "s3://bucket/prefix URI"),
        ("--output", "hdfs://namenode/rec", "the hdfs:// scheme is not supported"),
        ("--output", "gs:/bucket/rec", "the gs:// scheme is not supported"),
        ("--output", "S3://bucket/rec", "write the scheme as s3:// (lower case, two slashes), e.g. s3://bucket/rec"),
        ("--output", "s3:/bucket/rec", "write the scheme as s3:// (lower case, two slashes), e.g. s3://bucket/rec"),
        ("--input", "file:///data/photos", "file:// URLs are not read; give the local path, e.g. --input /data/photos"),
        ("--labels", "https://host/labels.csv", "the https:// scheme is not supported"),
        ("--class-map", "gs://bucket/classes.json", "the gs:// scheme is not supported"),
    ],
)
def test_an_unsupported_scheme_is_one_line_and_no_local_folder(tmp_path, flag, value, message):
    args = {"--input": "photos", "--output": "out"}
    shutil.copytree(SAMPLE, tmp_path / "photos")
    args[flag] = value
    proc = run_in(tmp_path, *[x for pair in args.items() for x in pair], check=False)
    assert one_error_line(proc).startswith("error: %s %s: %s" % (flag, value, message))
    assert sorted(os.listdir(tmp_path)) == ["photos"]


@pytest.mark.parametrize(
    "module, args, line",
    [
        ("pipeline.verify", ["gs://b/rec"], "OUT gs://b/rec: the gs:// scheme is not supported"),
        ("pipeline.preview", ["S3://b/rec"], "OUT S3://b/rec: write the scheme as s3://"),
        ("pipeline.preview", ["out", "--out-dir", "gs://b/png"], "--out-dir gs://b/png: the gs:// scheme"),
        ("pipeline.im2rec", ["gs://b/p", "photos", "--list"], "PREFIX gs://b/p: the gs:// scheme"),
        ("pipeline.im2rec", ["p", "hdfs://nn/photos", "--list"], "ROOT hdfs://nn/photos: the hdfs:// scheme"),
    ],
)
def test_other_commands_refuse_unsupported_schemes(tmp_path, module, args, line):
    proc = run_in(tmp_path, *args, module=module, check=False)
    assert one_error_line(proc).startswith("error: " + line)
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("value", ["photos", "./gs:/b", "/data/photos", "s3://b/p", "s3://b", "C", "a:b", "x/y:/z"])
def test_local_paths_and_s3_uris_pass_the_scheme_check(value):
    check_location("--input", value)


def test_the_scheme_check_names_flag_value_and_what_is_supported():
    with pytest.raises(OptionsError) as err:
        check_location("--labels", "gs://b/l.csv")
    assert str(err.value) == ("--labels gs://b/l.csv: the gs:// scheme is not supported; use a local path or an "
                              "s3://bucket/prefix URI")
