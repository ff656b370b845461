"""tests/skips.py: the allow-list, tests/README.md's copy of it, and the strict mode itself
(a small pytest session run in a subprocess with and without QUIESCE_STRICT_SKIPS=1)."""

import os
import re
import subprocess
import sys
import textwrap

from tests import skips

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _unescape(pattern: str) -> str:
    return re.sub(r"\\(.)", r"\1", pattern)


def _readme_entries():
    with open(os.path.join(REPO, "tests", "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("\n## Skips\n", 1)[1].split("\n## ", 1)[0]
    bullets = re.split(r"\n(?=- )", section[section.index("\n- ") + 1:])
    entries = []
    for bullet in bullets:
        flat = " ".join(bullet.split())
        found = re.fullmatch(r'- `([^`]+)` — "([^"]+)": (.+?)\.?', flat)
        assert found, "tests/README.md: a skip entry not in the form - `where` — \"reason\": why: %r" % flat
        entries.append(found.groups())
    return entries


def test_readme_lists_exactly_the_allowed_skips():
    readme = _readme_entries()
    code = [(_unescape(e.where), _unescape(e.reason), " ".join(e.why.split())) for e in skips.ALLOWED]
    assert sorted(readme) == sorted(code)


def test_every_entry_says_why_and_is_narrow():
    for entry in skips.ALLOWED:
        assert entry.where.startswith("tests/") and entry.why.strip(), entry
        assert entry.matches(_unescape(entry.where) + "x", _unescape(entry.reason))
        # The whole reason must match: a longer reason naming something else is refused.
        assert not entry.matches(_unescape(entry.where), _unescape(entry.reason) + ", and no root")


def test_reason_is_read_from_the_report_as_pytest_records_it():
    assert skips.skip_reason(("/x.py", 3, "Skipped: no root here")) == "no root here"
    assert skips.skip_reason("Skipped: plain") == "plain"


def test_disallowed_keeps_order_and_drops_repeats_and_allowed_ones():
    allowed = skips.ALLOWED[0]
    got = skips.disallowed([("tests/b.py::t", "no root"), ("tests/unit/test_x.py::t", _unescape(allowed.reason)),
                            ("tests/a.py::t", "no tool"), ("tests/b.py::t", "no root")])
    assert got == [("tests/b.py::t", "no root"), ("tests/a.py::t", "no tool")]


def _session(tmp_path, strict: bool):
    """A pytest run over a tiny tree with one passing test, one plain skip and one xfail."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""\
        import sys
        sys.path.insert(0, %r)
        from tests import skips

        def pytest_configure(config):
            skips.register(config)
        """ % REPO))
    (tmp_path / "test_some.py").write_text(textwrap.dedent("""\
        import pytest

        def test_runs():
            pass

        def test_needs_root():
            pytest.skip("acting as another user needs root")

        @pytest.mark.xfail(strict=True, reason="a known bug")
        def test_known_bug():
            assert False
        """))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    if strict:
        env[skips.STRICT_VAR] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "no:timeout",
                           str(tmp_path)], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=120)


def test_strict_mode_fails_the_run_on_a_skip_that_is_not_allowed(tmp_path):
    done = _session(tmp_path, strict=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "skips not allowed" in done.stdout
    assert "test_some.py::test_needs_root: acting as another user needs root" in done.stdout
    assert "test_known_bug" not in done.stdout.split("skips not allowed", 1)[1]


def test_without_strict_mode_a_skip_passes(tmp_path):
    done = _session(tmp_path, strict=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skips not allowed" not in done.stdout
