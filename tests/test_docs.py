"""The README's option table and --help come from the same table and cannot drift apart."""

from conftest import run_cli


def test_readme_option_table_is_generated_from_options():
    proc = run_cli("--check", module="pipeline.docs", check=False)
    assert proc.returncode == 0, proc.stderr


def test_help_lists_every_option_with_default_and_example():
    from imgrec.options import GROUPS, OPTIONS

    proc = run_cli("--help")
    text = "".join(proc.stdout.split())  # argparse wraps lines, also inside hyphenated words
    for _, title in GROUPS:
        if any(o.group == _ for o in OPTIONS):
            assert title + ":" in proc.stdout
    for opt in OPTIONS:
        assert opt.flags[0] in proc.stdout
        assert "".join(("e.g. " + opt.example).split()) in text, opt.flags
