"""The command's fixed cost: the lean import's stand-ins (``imgrec.quiet``) and what ``pipeline.tuning`` keeps.

Each check runs in a fresh interpreter (a subprocess), as the command does: both change Beam for the whole
process, and this test process imports Beam whole.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO, SAMPLE


REAL = """
import sys
def real(family):  # the real modules of a package that are loaded now (a stand-in is not one)
    return sorted(m for m, mod in list(sys.modules.items())
                  if m.split('.')[0] == family and type(mod).__name__ != '_StandIn' and m != 'cryptography'
                  and not m.startswith('cryptography.__'))
"""


def python(code: str, env: dict | None = None) -> list:
    """Run ``code`` in a new interpreter from the repository (after ``REAL``); it prints one JSON value last."""
    proc = subprocess.run([sys.executable, "-c", REAL + textwrap.dedent(code)], cwd=REPO, capture_output=True,
                          text=True, timeout=180, env=env)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])




def test_the_lean_import_loads_none_of_the_modules_beam_only_takes_names_from():
    got = python("""
        import json
        from imgrec.quiet import LOCAL_RUN_PROXIES, import_beam
        import_beam(lean=True)
        from apache_beam.typehints import typehints
        from apache_beam.coders import coder_impl
        from apache_beam.transforms import util
        left = sorted(m for m in LOCAL_RUN_PROXIES if m in sys.modules)
        print(json.dumps([real('beartype'), real('fastavro'), real('cryptography'), left,
                          callable(typehints.is_subhint), callable(coder_impl.parse_schema), callable(util.Fernet)]))
    """)
    assert got == [[], [], [], [], True, True, True]


def test_a_stand_in_calls_the_real_function_and_a_later_import_gets_the_real_module():
    got = python("""
        import io, json
        from imgrec.quiet import import_beam
        import_beam(lean=True)
        from apache_beam.coders import coder_impl
        from apache_beam.transforms import util
        schema = coder_impl.parse_schema({'type': 'record', 'name': 'R', 'fields': [{'name': 'a', 'type': 'int'}]})
        buf = io.BytesIO()
        coder_impl.schemaless_writer(buf, schema, {'a': 5})
        buf.seek(0)
        record = coder_impl.schemaless_reader(buf, schema)
        import fastavro
        from cryptography.fernet import Fernet
        token = util.Fernet(Fernet.generate_key())
        print(json.dumps([record, type(fastavro).__name__, hasattr(fastavro, 'reader'), type(token).__name__,
                          'fastavro._read_py' in sys.modules or 'fastavro._read' in sys.modules]))
    """)
    assert got == [{"a": 5}, "module", True, "Fernet", True]


def test_an_exception_beam_catches_from_a_stand_in_is_caught():
    """beartype raises its BeartypeDoorException for a hint it does not support; Beam catches the name it took
    (a stand-in class), so the real exception reaches Beam as that class."""
    got = python("""
        import json
        from imgrec.quiet import import_beam
        import_beam(lean=True)
        from apache_beam.typehints import typehints
        from apache_beam.coders import coder_impl
        try:  # another package's error passes as it is, and beartype is not imported to look at it
            coder_impl.parse_schema({'type': 'no such type'})
        except Exception as exc:
            other = [type(exc).__module__.split('.')[0], real('beartype')]
        try:
            typehints.is_subhint(1, int)
            caught = 'nothing raised'
        except typehints.BeartypeDoorException as exc:
            from beartype.roar import BeartypeDoorException
            caught = isinstance(exc.__cause__, BeartypeDoorException) and "the real one, as Beam's name"
        print(json.dumps([other, caught, typehints.is_subhint(bool, int), real('beartype') != []]))
    """)
    assert got == [["fastavro", []], "the real one, as Beam's name", True, True]


def test_a_name_not_listed_read_during_the_lean_import_comes_from_the_real_module():
    got = python("""
        import json, sys
        from imgrec import quiet
        with quiet._lean_import():
            import fastavro
            stand_in = type(fastavro).__name__
            reader = fastavro.reader  # not a name Beam takes: the real module is imported for it
            now = type(sys.modules['fastavro']).__name__
        print(json.dumps([stand_in, now, reader.__module__.startswith('fastavro')]))
    """)
    assert got == ["_StandIn", "module", True]


# ---------------------------------------------------------------- pipeline.tuning


def test_remembered_signatures_are_the_ones_beam_reads():
    got = python("""
        import functools, json
        from apache_beam.transforms import core
        import apache_beam as beam
        read = core.get_function_args_defaults

        class Fn(beam.DoFn):
            def process(self, element, size=3, *rest, side=None):
                yield element

        def plain(a, b=2):
            return a

        class Callable:
            def __call__(self, x, y=1):
                return x

        things = [Fn().process, Fn.process, plain, lambda q, r=5: q, functools.partial(plain, 1), Callable(), len]
        before = [read(f) for f in things]
        from pipeline import tuning
        tuning.remember_signatures()
        after = [core.get_function_args_defaults(f) for f in things for _ in range(2)]
        first = core.get_function_args_defaults(plain)
        first[0].append('changed'); first[1].append('changed')  # a caller's lists are its own
        again = core.get_function_args_defaults(plain)
        print(json.dumps([core.get_function_args_defaults is not read, [repr(x) for x in before],
                          [repr(x) for x in after[::2]], [repr(x) for x in after[1::2]], repr(again)]))
    """)
    patched, before, after, second, again = got
    assert patched and before == after == second
    assert again == repr((["a", "b"], [2]))


def test_remembered_option_views_are_the_views_beam_makes():
    got = python("""
        import json
        from apache_beam.options.pipeline_options import (DebugOptions, DirectOptions, PipelineOptions,
                                                          SetupOptions, StandardOptions, TypeOptions)
        flags = ['--runner=DirectRunner', '--direct_num_workers=2', '--experiments=a', '--experiments=b',
                 '--no_pipeline_type_check', '--save_main_session']
        classes = (StandardOptions, DirectOptions, DebugOptions, TypeOptions, SetupOptions)

        def views(flags):
            options = PipelineOptions(flags, job_name='j')
            seen = [[(name, getattr(view, name)) for name in view._visible_option_list()]
                    for view in map(options.view_as, classes)]
            options.view_as(DebugOptions).add_experiment('c')  # changes this options object only
            seen.append(options.view_as(DebugOptions).experiments)
            seen.append(options.view_as(TypeOptions).pipeline_type_check)
            seen.append(PipelineOptions(flags).view_as(DebugOptions).experiments)
            return repr(seen)

        before = [views(flags), views(flags[:2]), views([])]
        from pipeline import tuning
        tuning.remember_option_views()
        after = [views(flags), views(flags[:2]), views([]), views(flags)]
        print(json.dumps([PipelineOptions.__init__.remembers, before, after]))
    """)
    patched, before, after = got
    assert patched
    assert after[:3] == before and after[3] == before[0]
    assert "'a', 'b', 'c'" in before[0] and "['a', 'b']" in before[0]  # the check itself can tell views apart


def test_the_commands_process_tunes_beam_and_a_library_process_does_not(tmp_path):
    """pipeline.run's main() (the command, and the imgrec-convert script) makes the changes; a notebook that
    imports pipeline.api gets Beam as it is. The command's output is the library's, byte for byte."""
    probe = """
        import json, os, sys
        sys.argv = %r
        def report(code=0):
            from apache_beam.transforms import core
            from apache_beam.options import pipeline_options as po
            print(json.dumps([code, getattr(core.get_function_args_defaults, 'remembers', False),
                              getattr(po.PipelineOptions.__init__, 'remembers', False)]), flush=True)
            real_exit(0)
        real_exit, os._exit = os._exit, report
        %s
        report()
    """
    out = tmp_path / "command"
    job = ["pipeline.run", "--input", str(SAMPLE), "--output", str(out), "--pass-through", "--quiet"]
    command = python(probe % (job, "import runpy; runpy.run_module('pipeline.run', run_name='__main__')"))
    library = python(probe % (["notebook"], "import pipeline.api\n"
                              "        pipeline.api.convert(%r, %r, pass_through=True)" % (str(SAMPLE),
                                                                                          str(tmp_path / "lib"))))
    assert command == [0, True, True]
    assert library == [0, False, False]
    for name in ("train", "validation"):
        for ours, theirs in zip(sorted((out / name).iterdir()), sorted((tmp_path / "lib" / name).iterdir())):
            assert ours.name == theirs.name and ours.read_bytes() == theirs.read_bytes()


def test_the_commands_start_no_blas_threads_and_a_library_process_is_left_as_it_is():
    """Loading numpy starts an OpenBLAS thread per core but one, each spinning for a while: the commands ask for
    none (nothing of ours calls BLAS); a notebook's process, and a user's own setting, are left alone."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    probe = """
        import json, os, sys
        sys.argv = [%r]
        import %s
        import numpy  # loaded by now in every case
        print(json.dumps([os.environ.get('OPENBLAS_NUM_THREADS'), len(os.listdir('/proc/self/task'))]))
    """
    for script, module in [("imgrec-convert", "pipeline.run"), ("imgrec-verify", "pipeline.verify"),
                           ("imgrec-preview", "pipeline.preview"), ("imgrec-im2rec", "pipeline.im2rec")]:
        assert python(probe % (script, module), env) == ["1", 1], script  # one thread: the interpreter's own
    assert python(probe % ("notebook", "pipeline.api"), env)[0] is None
    assert python(probe % ("imgrec-convert", "pipeline.run"), dict(env, OPENBLAS_NUM_THREADS="2"))[0] == "2"
