"""The defaults-file reader against the rules of MySQL's clients, checked with my_print_defaults."""

import os
import re
import shutil
import subprocess

import pytest

from quiesce.base import optionfile
from quiesce.base.errors import ConfigError
from .privileges import needs_root

MY_PRINT_DEFAULTS = "my_print_defaults"  # mariadb-client (Makefile DEB_PACKAGES)


def write(path, text, mode=0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def my_print_defaults(path, *groups):
    tool = shutil.which(MY_PRINT_DEFAULTS)
    assert tool, "my_print_defaults is missing: install mariadb-client (make deps)"
    result = subprocess.run([tool, "--defaults-file=" + path] + list(groups), capture_output=True,
                            timeout=30, check=True)
    return result.stdout.decode("utf-8")


def as_printed(options):
    return "".join("--%s\n" % o.name if o.value is None else "--%s=%s\n" % (o.name, o.value) for o in options)


# (option line, the name and value a MySQL client sees)
LINES = [
    ("password = pw  # old one", ("password", "pw")),
    ("password=pw#no space needed", ("password", "pw")),
    ('password = "pw # kept"  # comment', ("password", "pw # kept")),
    ("password = 'a#b'", ("password", "a#b")),
    ('password = "a\\"#b"', ("password", 'a"#b')),
    ("password = ;not a comment here", ("password", ";not a comment here")),
    ("password = a\\sb", ("password", "a b")),
    ("password = \\n\\t\\r\\b\\s\\\"\\'\\\\", ("password", "\n\t\r\b \"'\\")),
    ("password = a\\qb", ("password", "a\\qb")),
    ("password = ab\\", ("password", "ab\\")),
    ("password = 'mismatched\"", ("password", "'mismatched\"")),
    ('password = "', ("password", '"')),
    ('password = ""', ("password", "")),
    ("password =", ("password", "")),
    ('password = "a" b "c"', ("password", 'a" b "c')),
    ('password = "open # still inside', ("password", '"open # still inside')),
    ("password = a = b", ("password", "a = b")),
    ("password   =   spaced value   ", ("password", "spaced value")),
    ("password = 'it''s'", ("password", "it''s")),
    ("skip-ssl", ("skip-ssl", None)),
    ("skip-ssl # comment", ("skip-ssl", None)),
    ("user_name\t=\tx", ("user_name", "x")),
]


@pytest.mark.parametrize("line,expected", LINES, ids=[line for line, _ in LINES])
def test_option_line_is_read_like_mysql_clients(tmp_path, line, expected):
    assert optionfile.parse_option(line) == expected
    path = write(tmp_path / "my.cnf", "[client]\n%s\n" % line)
    name, value = expected
    assert my_print_defaults(path, "client") == ("--%s\n" % name if value is None else "--%s=%s\n" % expected)


def test_whole_files_with_includes_match_my_print_defaults(tmp_path):
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    write(conf_d / "20-second.cnf", "[client]\nuser = from-second\n")
    write(conf_d / "10-first.cnf", "[quiesce]\nport = 3310\n[mysqld]\nport = 1\n")
    write(conf_d / "30-ignored.conf", "[client]\nuser = never\n")
    included = write(tmp_path / "extra.cnf", "[CLIENT]\r\nsocket = /run/extra.sock\r\nhost=h # c\r\n")
    main = write(tmp_path / "my.cnf",
                 "# comment\n; comment\n\n[client]\nuser = first\n!include %s\npassword = \"p#w\"\n"
                 "[mysqld]\nuser = mysql\n[ quiesce ]\nuser = nobody\n[quiesce]\nuser = q\n"
                 "!includedir %s\n[client]\nuser=last\n" % (included, conf_d))
    options = optionfile.read_options(main, ("client", "quiesce"))
    assert as_printed(options) == my_print_defaults(main, "client", "quiesce")
    assert [o.value for o in options if o.name == "user"] == ["first", "q", "from-second", "last"]


def test_credentials_take_quiesce_over_client_wherever_it_appears(tmp_path):
    path = write(tmp_path / "my.cnf", "[quiesce]\nuser = q\n[client]\nuser = c\nloose-password = pw\n"
                                      "port = 3307\ndefault-character-set = utf8mb4\n")
    assert optionfile.read_credentials(path) == {"user": "q", "password": "pw", "port": "3307"}


@pytest.mark.parametrize("text,problem", [
    ("user = x\n", "option before the first [group]"),
    ("[client\nuser = x\n", "without a closing ]"),
    ("[client]\npassword\n", "password without a value"),
    ("[client]\n= x\n", "option without a name"),
    ("[client]\n!include relative.cnf\n", "needs an absolute path"),
    ("[client]\n!include /nonexistent/quiesce-test.cnf\n", "does not exist"),
    ("[client]\n!includedir /nonexistent/quiesce-test.d\n", "cannot read directory"),
    ("[client]\n!frobnicate /x\n", "unknown directive"),
    ("[client]\n!include\n", "unknown directive"),
])
def test_what_clients_would_misread_or_skip_is_an_error(tmp_path, text, problem):
    with pytest.raises(ConfigError, match=re.escape(problem)) as info:
        optionfile.read_credentials(write(tmp_path / "my.cnf", text))
    assert "\n" not in str(info.value)


def test_an_include_loop_stops_at_the_depth_limit(tmp_path):
    path = tmp_path / "loop.cnf"
    write(path, "[client]\n!include %s\n" % path)
    with pytest.raises(ConfigError, match="nested deeper than %d" % optionfile.MAX_DEPTH):
        optionfile.read_credentials(str(path))


@needs_root
def test_included_files_get_the_same_owner_and_mode_checks(tmp_path):
    included = write(tmp_path / "extra.cnf", "[client]\nuser = x\n", mode=0o644)
    main = write(tmp_path / "my.cnf", "[client]\n!include %s\n" % included)
    assert optionfile.read_credentials(main) == {"user": "x"}
    os.chmod(included, 0o666)
    with pytest.raises(ConfigError, match="extra.cnf is writable by group or others"):
        optionfile.read_credentials(main)
    os.chmod(included, 0o644)
    os.chown(included, 65534, 65534)
    with pytest.raises(ConfigError, match="belongs to uid 65534"):
        optionfile.read_credentials(main)
    os.chown(included, 0, 0)
    write(tmp_path / "extra.cnf", "[client]\npassword = pw\n", mode=0o644)
    with pytest.raises(ConfigError, match="extra.cnf holds a password and is readable"):
        optionfile.read_credentials(main)


def test_an_included_directory_writable_by_others_is_refused(tmp_path):
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    os.chmod(conf_d, 0o777)
    main = write(tmp_path / "my.cnf", "[client]\n!includedir %s\n" % conf_d)
    with pytest.raises(ConfigError, match="writable by group or others"):
        optionfile.read_credentials(main)


def test_a_password_in_another_group_does_not_make_the_file_secret(tmp_path):
    path = write(tmp_path / "my.cnf", "[client]\nuser = x\n[mysqldump]\npassword = other\n", mode=0o644)
    assert optionfile.read_credentials(path) == {"user": "x"}
