import argparse
import os
import re

import pytest

from quiesce.base import config, paths
from quiesce.base.errors import ConfigError
from .privileges import needs_root


def write(tmp_path, text, mode=0o600, name="quiesce.conf"):
    path = tmp_path / name
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("QUIESCE_"):
            monkeypatch.delenv(key)
    # Whatever this machine has in /etc/quiesce stays out of these tests.
    monkeypatch.setattr(paths, "CONFIG_FILE", str(tmp_path / "absent" / "quiesce.conf"))


def test_precedence_command_line_over_environment_over_file(tmp_path, monkeypatch):
    conf = write(tmp_path, "lock-timeout = 60\nacquire-timeout = 3\non-failure = continue\n")
    settings = config.parse(["--config", conf, "freeze"])
    assert (settings.lock_timeout, settings.acquire_timeout, settings.on_failure) == (60, 3, "continue")
    monkeypatch.setenv("QUIESCE_LOCK_TIMEOUT", "90")
    assert config.parse(["--config", conf, "freeze"]).lock_timeout == 90
    assert config.parse(["--config", conf, "freeze", "--lock-timeout", "120"]).lock_timeout == 120


def test_config_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("QUIESCE_CONFIG", write(tmp_path, "lock-timeout = 42\n"))
    assert config.parse(["status"]).lock_timeout == 42


def test_missing_explicit_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.parse(["--config", str(tmp_path / "nope.conf"), "status"])


def test_password_never_from_command_line_or_environment(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="visible to other users"):
        config.parse(["--password", "secret", "freeze"])
    with pytest.raises(ConfigError, match="visible to other users"):
        config.parse(["--password=secret", "freeze"])
    monkeypatch.setenv("QUIESCE_PASSWORD", "secret")
    with pytest.raises(ConfigError, match="visible to other users"):
        config.parse(["freeze"])


def test_password_file_readable_by_others_is_refused_with_the_fix(tmp_path):
    conf = write(tmp_path, "user = backup\npassword = s3cret\n", mode=0o644)
    with pytest.raises(ConfigError) as info:
        config.parse(["--config", conf, "freeze"])
    assert conf in str(info.value) and "chmod 600" in str(info.value)
    os.chmod(conf, 0o600)
    target = config.parse(["--config", conf, "freeze"]).targets[0]
    assert (target.user, target.password) == ("backup", "s3cret")
    assert "s3cret" not in repr(target)


def test_config_writable_by_others_is_refused(tmp_path):
    conf = write(tmp_path, "lock-timeout = 60\n", mode=0o666)
    with pytest.raises(ConfigError, match="writable by group or others"):
        config.parse(["--config", conf, "status"])


def test_defaults_file_fills_only_what_the_config_leaves_open(tmp_path):
    cnf = write(tmp_path, "[client]\nuser = cli\npassword = \"p w\"\nsocket = /x.sock\n[quiesce]\nuser = q\n",
                name="my.cnf")
    conf = write(tmp_path, "defaults-file = %s\nsocket = /y.sock\n" % cnf)
    target = config.parse(["--config", conf, "freeze"]).targets[0]
    assert (target.user, target.password, target.socket) == ("q", "p w", "/y.sock")
    os.chmod(cnf, 0o644)
    with pytest.raises(ConfigError, match="defaults-file"):
        config.parse(["--config", conf, "freeze"])


def test_zero_config_default_is_root_over_the_distribution_socket(tmp_path):
    target = config.parse(["--config", write(tmp_path, ""), "freeze"]).targets[0]
    assert target.user == "root" and target.password is None and target.host is None
    assert target.socket in paths.DEFAULT_SOCKETS
    assert target.position_file == paths.POSITION_FILE


def test_localhost_means_socket_and_other_hosts_mean_tcp(tmp_path):
    assert config.parse(["--host", "localhost", "freeze"]).targets[0].host is None
    target = config.parse(["--host", "db.example", "--port", "3307", "freeze"]).targets[0]
    assert (target.host, target.port, target.is_local) == ("db.example", 3307, False)


def test_localhost_with_a_socket_uses_the_socket(tmp_path):
    # A debian.cnf-style defaults-file names both; the MySQL clients then use the socket.
    cnf = write(tmp_path, "[client]\nhost = localhost\nsocket = /run/x/mysqld.sock\n", name="my.cnf")
    conf = write(tmp_path, "defaults-file = %s\n" % cnf)
    target = config.parse(["--config", conf, "freeze"]).targets[0]
    assert (target.host, target.socket) == (None, "/run/x/mysqld.sock")
    target = config.parse(["--host", "localhost", "--socket", "/run/y.sock", "freeze"]).targets[0]
    assert (target.host, target.socket, target.address) == (None, "/run/y.sock", "/run/y.sock")


def test_instance_sections(tmp_path):
    conf = write(tmp_path, "user = backup\npassword = top\n"
                           "[instance:a]\nsocket = /run/a.sock\n"
                           "[instance:b]\nsocket = /run/b.sock\npassword = bee\nposition-file = /srv/b.json\n")
    a, b = config.parse(["--config", conf, "freeze"]).targets
    assert (a.name, a.socket, a.user, a.password, a.position_file) == (
        "a", "/run/a.sock", "backup", "top", "/var/lib/quiesce/position-a.json")
    assert (b.password, b.position_file) == ("bee", "/srv/b.json")


def test_unknown_section_or_key_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown section"):
        config.parse(["--config", write(tmp_path, "[mysqld]\nx = 1\n"), "freeze"])
    with pytest.raises(ConfigError, match="unknown key"):
        config.parse(["--config", write(tmp_path, "[instance:a]\nlock-timeout = 5\n"), "freeze"])
    with pytest.raises(ConfigError):
        config.parse(["--config", write(tmp_path, "no-such-option = 1\n"), "freeze"])


def test_instance_password_from_command_line_is_refused():
    with pytest.raises(ConfigError, match="only from a file"):
        config.parse(["--instance", "a:socket=/s,password=x", "freeze"])


@pytest.mark.parametrize("argv,message", [
    (["frobnicate"], "unknown command"),
    ([], "no command given"),
    (["freeze", "--lock-timeout", "-1"], "greater than 0"),
    (["freeze", "--lock-timeout", "abc"], "must be a number of seconds"),
    (["freeze", "--acquire-timeout", "50", "--lock-timeout", "10"], "shorter than lock-timeout"),
    (["freeze", "--runtime-dir", "relative"], "absolute"),
    (["freeze", "--release-on-fs-thaw", "maybe"], "true or false"),
    (["freeze", "--port", "70000"], "port"),
    (["freeze", "extra"], "unexpected extra argument"),
    (["hook"], "needs an action"),
    (["hook", "explode"], "unknown hook action"),
])
def test_bad_input_gives_one_line_config_error(argv, message):
    with pytest.raises(ConfigError, match=message) as info:
        config.parse(argv)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("word,action", [("freeze", "freeze"), ("THAW", "thaw"), ("freezeFail", "freezeFail"),
                                         ("freezefail", "freezeFail"), ("FreezeFail", "freezeFail")])
def test_hook_actions_case_insensitive_with_extra_arguments(word, action):
    assert config.parse(["hook", word, "", "extra"]).hook_action == action


def test_settings_round_trip_for_the_holder(tmp_path):
    conf = write(tmp_path, "password = pw\n[instance:x]\nsocket = /s\n")
    settings = config.parse(["--config", conf, "freeze"])
    assert config.settings_from_dict(config.settings_to_dict(settings)) == settings


def test_bad_port_in_a_section_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="line 2: port must be a port number"):
        config.parse(["--config", write(tmp_path, "[instance:a]\nport = x\n"), "freeze"])


def config_error(argv, env=None):
    """The one-line message of the ConfigError that parse must raise."""
    with pytest.raises(ConfigError) as info:
        config.parse(argv, env=env if env is not None else {})
    message = str(info.value)
    assert "\n" not in message
    return message


# --- allow-cleartext-auth ---------------------------------------------------------------

def test_allow_cleartext_auth_is_off_unless_set(tmp_path):
    assert config.parse(["freeze"], env={}).allow_cleartext_auth is False
    conf = write(tmp_path, "allow-cleartext-auth = true\n")
    settings = config.parse(["--config", conf, "freeze"], env={})
    assert settings.allow_cleartext_auth is True
    assert config.settings_from_dict(config.settings_to_dict(settings)).allow_cleartext_auth is True
    assert config.parse(["freeze"], env={"QUIESCE_ALLOW_CLEARTEXT_AUTH": "yes"}).allow_cleartext_auth is True
    assert config.parse(["--config", conf, "freeze", "--allow-cleartext-auth", "off"],
                        env={}).allow_cleartext_auth is False
    assert "allow-cleartext-auth" in config_error(["freeze", "--allow-cleartext-auth", "sometimes"])


# --- seconds: finite, bounded, checked before anything runs -----------------------------

SECONDS_OPTIONS = {"lock-timeout": config.MAX_LOCK_TIMEOUT, "acquire-timeout": config.MAX_WAIT,
                   "connect-timeout": config.MAX_WAIT, "long-query-time": config.MAX_AGE,
                   "long-query-wait": config.MAX_WAIT, "kill-long-selects": config.MAX_AGE}


@pytest.mark.parametrize("option", sorted(SECONDS_OPTIONS))
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "infinity", "1e400", "above-maximum", "", "5s"])
@pytest.mark.parametrize("source", ["command line", "environment", "config file"])
def test_seconds_must_be_finite_and_at_most_the_maximum(tmp_path, option, value, source):
    if value == "above-maximum":
        value = "%d" % (SECONDS_OPTIONS[option] + 1)
    argv, env = ["freeze"], {}
    if source == "command line":
        argv += ["--%s=%s" % (option, value)]
    elif source == "environment":
        env["QUIESCE_" + option.upper().replace("-", "_")] = value
    else:
        argv = ["--config", write(tmp_path, "%s = %s\n" % (option, value or '""'))] + argv
    if source == "config file" and not value:
        assert "empty value" in config_error(argv, env)
        return
    message = config_error(argv, env)
    assert option in message and "at most %g" % SECONDS_OPTIONS[option] in message


@pytest.mark.parametrize("option", sorted(SECONDS_OPTIONS))
def test_seconds_accept_the_documented_maximum(option):
    argv = ["freeze", "--" + option, "%g" % SECONDS_OPTIONS[option]]
    if option == "acquire-timeout":
        argv += ["--lock-timeout", "%g" % config.MAX_LOCK_TIMEOUT]
    settings = config.parse(argv, env={})
    assert getattr(settings, option.replace("-", "_")) == SECONDS_OPTIONS[option]


def test_every_command_checks_the_whole_configuration(tmp_path):
    conf = write(tmp_path, "long-query-wait = nan\n")
    for command in (["freeze"], ["thaw"], ["status"], ["check"], ["hook", "freeze"], ["hook", "thaw"]):
        assert "long-query-wait" in config_error(["--config", conf] + command)


# --- the password comes only from a file, and no message repeats a value ---------------

@pytest.mark.parametrize("argv", [
    ["freeze", "--passw", "S3CRETV"], ["freeze", "--pass=S3CRETV"], ["--passwor", "S3CRETV", "freeze"],
    ["freeze", "-pS3CRETV"], ["hook", "freeze", "--passw", "S3CRETV"],
])
def test_abbreviated_password_options_are_refused(argv):
    message = config_error(argv)
    assert "unknown option" in message and "S3CRETV" not in message


@pytest.mark.parametrize("instance", [
    '{"name": "a", "password": "S3CRETV"}', "a:socket=/s,password=S3CRETV",
])
def test_instance_from_command_line_or_environment_carries_no_password(instance):
    assert "only from a file" in config_error(["--instance", instance, "freeze"])
    message = config_error(["freeze"], env={"QUIESCE_INSTANCE": instance})
    assert "only from a file" in message and "S3CRETV" not in message
    message = config_error(["freeze"], env={"QUIESCE_INSTANCE": "[%s]" % instance}
                           if instance.startswith("{") else {"QUIESCE_INSTANCE": instance})
    assert "only from a file" in message


@pytest.mark.parametrize("instance,problem", [
    ("{}", 'needs a "name"'),
    ("[]", "JSON object"),
    ('{"name": "a", "socket": ["/S3CRETV"]}', "socket must be a string"),
    ('{"name": "a", "port": ["S3CRETV"]}', "port must be a string"),
    ('{"name": "a", "user": {"S3CRETV": 1}}', "user must be a string"),
    ('{"name": "a", "user": true}', "user must be a string"),
    ('{"name": "a", "S3CRETV": "x"}', "unknown key"),
    ('{"name": ["S3CRETV"]}', "instance names are"),
    ('{"name": "a", "socket": "S3CRETV"}', "absolute path"),
    ('{"name": "a", "port": "S3CRETV"}', "port number"),
    ('{"name": S3CRETV', "not valid JSON"),
    ("a:S3CRETV", "expected NAME:key=value"),
])
def test_instance_json_is_validated_without_echoing_values(instance, problem):
    message = config_error(["--instance", instance, "freeze"])
    assert problem in message and "S3CRETV" not in message


@pytest.mark.parametrize("argv,env,conf", [
    (["freeze", "--lock-timeout", "S3CRETV"], {}, None),
    (["freeze", "--driver", "S3CRETV"], {}, None),
    (["freeze", "--port", "S3CRETV"], {}, None),
    (["freeze", "--socket", "S3CRETV"], {}, None),
    (["freeze", "--release-on-fs-thaw", "S3CRETV"], {}, None),
    (["status", "--json=S3CRETV"], {}, None),
    (["status"], {"QUIESCE_JSON": "S3CRETV"}, None),
    (["S3CRETV"], {}, None),
    (["freeze", "S3CRETV"], {}, None),
    (["hook", "S3CRETV"], {}, None),
    (["freeze"], {"QUIESCE_LOCK_METHOD": "S3CRETV"}, None),
    (["freeze"], {}, "lock-timeout = S3CRETV\n"),
    (["freeze"], {}, "S3CRETV\n"),
    (["freeze"], {}, "S3CRETV S3CRETV\n"),
    (["freeze"], {}, "user = 'S3CRETV\n"),
    (["freeze"], {}, "[instance:a]\nport = S3CRETV\n"),
])
def test_errors_never_repeat_the_value(tmp_path, argv, env, conf):
    if conf is not None:
        argv = ["--config", write(tmp_path, conf)] + argv
    assert "S3CRETV" not in config_error(argv, env)


def test_list_looking_values_are_plain_strings_never_echoed(tmp_path):
    conf = write(tmp_path, "password = [S3CRETV, x]\n")
    assert config.parse(["--config", conf, "freeze"], env={}).targets[0].password == "[S3CRETV, x]"
    conf = write(tmp_path, "password = [S3CRETV, x]\nsocket = [/a, /b]\n")
    message = config_error(["--config", conf, "freeze"])
    assert "socket must be an absolute path" in message and "S3CRETV" not in message


# --- files: owner and mode of what is read ----------------------------------------------

@needs_root
def test_config_file_owned_by_another_user_is_refused(tmp_path):
    conf = write(tmp_path, "lock-timeout = 60\n")
    os.chown(conf, 65534, 65534)
    assert "belongs to uid 65534" in config_error(["--config", conf, "freeze"])


@needs_root
def test_defaults_file_owned_by_another_user_or_writable_by_others_is_refused(tmp_path):
    cnf = write(tmp_path, "[client]\nsocket = /run/x.sock\n", mode=0o644, name="my.cnf")
    conf = write(tmp_path, "defaults-file = %s\n" % cnf)
    assert config.parse(["--config", conf, "freeze"], env={}).targets[0].socket == "/run/x.sock"
    os.chmod(cnf, 0o666)
    assert "writable by group or others" in config_error(["--config", conf, "freeze"])
    os.chmod(cnf, 0o620)
    assert "writable by group or others" in config_error(["--config", conf, "freeze"])
    os.chmod(cnf, 0o600)
    os.chown(cnf, 65534, 65534)
    assert "belongs to uid 65534" in config_error(["--config", conf, "freeze"])


def test_a_password_in_the_config_file_needs_mode_0600(tmp_path):
    conf = write(tmp_path, "lock-timeout = 60\n[instance:a]\npassword = pw\n", mode=0o640)
    assert "chmod 600" in config_error(["--config", conf, "freeze"])


def test_config_file_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo, 0o600)
    assert "not a regular file" in config_error(["--config", str(fifo), "freeze"])


# --- no tracebacks: every bad input is a one-line ConfigError ---------------------------

def test_non_utf8_config_even_in_a_comment(tmp_path):
    conf = tmp_path / "quiesce.conf"
    conf.write_bytes(b"lock-timeout = 60\n# caf\xe9\n")
    os.chmod(conf, 0o600)
    assert "line 2 is not valid UTF-8" in config_error(["--config", str(conf), "freeze"])


def test_latin1_password_in_the_defaults_file(tmp_path):
    cnf = tmp_path / "my.cnf"
    cnf.write_bytes(b"[client]\npassword = caf\xe9\n")
    os.chmod(cnf, 0o600)
    message = config_error(["--defaults-file", str(cnf), "freeze"])
    assert "line 2 is not valid UTF-8" in message and "caf" not in message


@pytest.mark.parametrize("instance", ['{"name": "../../../etc/evil"}', "../../etc/evil:socket=/s",
                                      '{"name": ".hidden"}', '{"name": ""}', '{"name": "a/b"}'])
def test_instance_names_cannot_leave_the_state_directory(tmp_path, instance):
    assert "instance names are" in config_error(["--instance", instance, "freeze"])
    assert "instance names are" in config_error(["freeze"], env={"QUIESCE_INSTANCE": instance})


def test_instance_section_names_are_checked(tmp_path):
    conf = write(tmp_path, "[instance:../../etc/evil]\nsocket = /s\n")
    assert "instance names are" in config_error(["--config", conf, "freeze"])


def test_good_instance_gets_its_position_file_in_the_state_directory():
    target, = config.parse(["--instance", '{"name": "reports", "socket": "/run/r.sock", "port": 3307}',
                            "freeze"], env={}).targets
    assert (target.name, target.socket, target.port) == ("reports", "/run/r.sock", 3307)
    assert os.path.dirname(target.position_file) == paths.STATE_DIR


# --- nothing silently ignored -------------------------------------------------------------

@pytest.mark.parametrize("command", [["hook", "freeze"], ["hook", "thaw"], ["freeze"], ["status"]])
def test_unknown_config_keys_are_refused_in_every_mode(tmp_path, command):
    conf = write(tmp_path, "lock_timeout = 30\n")
    message = config_error(["--config", conf] + command)
    assert "unknown key lock_timeout" in message and "did you mean lock-timeout" in message


def test_hook_mode_still_ignores_extra_words_but_not_options():
    assert config.parse(["hook", "freeze", "/dev/nvme0n1,/dev/nvme1n1"], env={}).hook_action == "freeze"
    assert config.parse(["hook", "freezeFail", "", ""], env={}).hook_action == "freezeFail"
    assert "unknown option --bogus" in config_error(["hook", "freeze", "--bogus"])


@pytest.mark.parametrize("form", [["-c{conf}"], ["-c", "{conf}"], ["--config={conf}"], ["--config", "{conf}"]])
def test_every_form_of_config_is_honoured(tmp_path, form):
    conf = write(tmp_path, "lock-timeout = 42\n")
    argv = [word.format(conf=conf) for word in form] + ["status"]
    settings = config.parse(argv, env={})
    assert (settings.lock_timeout, settings.config_file) == (42, conf)


def test_abbreviated_config_option_is_refused(tmp_path):
    conf = write(tmp_path, "lock-timeout = 42\n")
    assert "unknown option --conf" in config_error(["--conf", conf, "status"])
    assert "unknown option --conf" in config_error(["hook", "freeze", "--conf", conf])


@pytest.mark.parametrize("text,problem", [
    ("socket\n", "socket has no value"),
    ("release-on-fs-thaw\n", "release-on-fs-thaw has no value"),
    ("socket =\n", "socket has an empty value"),
    ("socket = /a\nsocket = /b\n", "socket is set twice (first on line 1)"),
    ("socket /run/x.sock\n", "expected key = value"),
    ("instance = a:socket=/s\n", "unknown key instance"),
    ("json = true\n", "unknown key json"),
    ("[instance:a]\nsocket = /a\n[instance:a]\n", "a second [instance:a]"),
    ("user = \"abc\" trailing\n", "text after the closing quote"),
])
def test_config_lines_that_would_be_misread_are_refused(tmp_path, text, problem):
    assert problem in config_error(["--config", write(tmp_path, text), "freeze"])


@pytest.mark.parametrize("key", ["socket", "defaults-file", "position-file", "runtime-dir"])
def test_relative_paths_are_refused_from_every_source(tmp_path, key):
    for argv, env in ((["--" + key, "rel/path", "freeze"], {}),
                      (["freeze"], {"QUIESCE_" + key.upper().replace("-", "_"): "rel/path"}),
                      (["--config", write(tmp_path, "%s = rel/path\n" % key), "freeze"], {})):
        assert "absolute path" in config_error(argv, env)
    if key != "runtime-dir":
        conf = write(tmp_path, "[instance:a]\n%s = rel/path\n" % key, name="sections.conf")
        assert "absolute path" in config_error(["--config", conf, "freeze"])


def test_relative_socket_from_the_defaults_file_is_refused(tmp_path):
    cnf = write(tmp_path, "[client]\nsocket = mysql.sock\n", name="my.cnf")
    assert "absolute path" in config_error(["--defaults-file", cnf, "freeze"])


def test_values_may_be_quoted_and_carry_comments(tmp_path):
    conf = write(tmp_path, "user = backup  # the backup account\npassword = \"a #b ;c\"  # quoted\n"
                           "host = 'db.example' ; note\nsocket = /run/x#y.sock\n")
    target = config.parse(["--config", conf, "freeze"], env={}).targets[0]
    assert (target.user, target.password, target.host, target.socket) == (
        "backup", "a #b ;c", "db.example", "/run/x#y.sock")


def test_every_file_key_is_documented_in_the_shipped_config_and_man_page():
    keys = config._file_keys(config.build_parser())
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    shipped = open(os.path.join(repo, "etc", "quiesce.conf"), encoding="utf-8").read()
    manual = open(os.path.join(repo, "man", "quiesce.conf.5"), encoding="utf-8").read().replace("\\-", "-")
    for key in keys:
        assert "#%s = " % key in shipped or "\n%s = " % key in shipped, key
        assert ".BI %s " % key in manual, key


# --- the defaults-file, as MySQL's clients read it (details in test_optionfile.py) --------

@pytest.mark.parametrize("line,password", [
    ("password = pw  # the old one", "pw"),
    ("password=pw#x", "pw"),
    ('password = "p#w"  # quoted', "p#w"),
    ("password = a\\sb\\\\c", "a b\\c"),
    ("password = 'it\\'s'", "it's"),
])
def test_defaults_file_values_are_read_like_mysql_clients(tmp_path, line, password):
    cnf = write(tmp_path, "[client]\nuser = backup\n%s\n" % line, name="my.cnf")
    assert config.parse(["--defaults-file", cnf, "freeze"], env={}).targets[0].password == password


def test_defaults_file_includes_are_followed(tmp_path):
    extra = write(tmp_path, "[client]\nuser = included\npassword = pw\n", name="extra.cnf")
    cnf = write(tmp_path, "[client]\n!include %s\nsocket = /run/x.sock\n" % extra, name="my.cnf")
    target = config.parse(["--defaults-file", cnf, "freeze"], env={}).targets[0]
    assert (target.user, target.password, target.socket) == ("included", "pw", "/run/x.sock")


def test_tls_settings_reach_every_target_and_are_checked_together(tmp_path):
    ca = write(tmp_path, "-----BEGIN CERTIFICATE-----\n", name="ca.pem", mode=0o644)
    conf = write(tmp_path, "host = db.example\nssl-mode = verify-identity\nssl-ca = %s\n"
                           "[instance:a]\nport = 3307\n[instance:b]\nhost = db2.example\n" % ca)
    targets = config.parse(["--config", conf, "freeze"]).targets
    assert [(t.ssl_mode, t.ssl_ca, t.allow_unverified_host) for t in targets] == [("verify-identity", ca, False)] * 2
    default = config.parse(["--config", write(tmp_path, ""), "freeze"]).targets[0]
    assert (default.ssl_mode, default.ssl_ca, default.allow_unverified_host) == ("preferred", None, False)
    assert "needs ssl-ca" in config_error(["--ssl-mode", "verify-ca", "freeze"])
    assert "only with ssl-mode" in config_error(["--ssl-ca", ca, "freeze"])
    assert "does not exist" in config_error(["--ssl-mode", "verify-ca", "--ssl-ca", ca + ".x", "freeze"])
    os.chmod(ca, 0o666)
    assert "writable by group or others" in config_error(["--ssl-mode", "verify-ca", "--ssl-ca", ca, "freeze"])
    assert config.parse(["--allow-unverified-host", "true", "freeze"]).targets[0].allow_unverified_host is True


# --- one parser per command: what --help advertises is what parse accepts ----------------

_ADVERTISED_RE = re.compile(r"\[((?:config|env): [^]]*)\]$")


def advertised(action):
    """{"config": key, "env": NAME} as the option's --help line names them."""
    match = _ADVERTISED_RE.search(action.help or "")
    if not match:
        return {}
    return dict(part.split(": ", 1) for part in match.group(1).split("; "))


def visible_options(parser):
    return {action.option_strings[-1]: action for action in parser._actions
            if action.option_strings and action.help != argparse.SUPPRESS}


def command_argv(command):
    return {None: [], "hook": ["hook", "freeze"], "register": ["register", "vmware"],
            "run": ["run", "--", "true"]}.get(command, [command])


def sample_values(key, action, tmp_path):
    """A valid value for option key, with any other setting it needs."""
    if key in ("config", "defaults-file", "ssl-ca"):
        path = write(tmp_path, "[client]\n" if key == "defaults-file" else "", name=key + ".sample")
        return {key: path, "ssl-mode": "verify-ca"} if key == "ssl-ca" else {key: path}
    if action.metavar == "BOOL":
        return {key: "true"}
    if action.metavar == "SECONDS":
        return {key: "7"}  # longer than acquire-timeout's default, shorter than lock-timeout's
    if action.metavar and action.metavar.startswith("{"):
        return {key: action.metavar[1:-1].split(",")[0]}
    if key == "port":
        return {key: "3307"}
    if action.metavar in ("FILE", "DIR", "PATH"):
        return {key: "/srv/quiesce-sample"}
    return {key: "sample1"}


@pytest.mark.parametrize("command", (None,) + config.COMMANDS)
def test_every_advertised_environment_variable_and_config_key_is_accepted(tmp_path, command):
    parser = config.build_parser(command)
    checked = 0
    for flag, action in sorted(visible_options(parser).items()):
        names = advertised(action)
        values = sample_values(flag[2:], action, tmp_path)
        if "env" in names:
            assert names["env"] == "QUIESCE_" + flag[2:].upper().replace("-", "_")
            env = {"QUIESCE_" + k.upper().replace("-", "_"): v for k, v in values.items()}
            config.parse(command_argv(command) or ["status"], env=env)
            # ... and the parser really takes the value from there.
            ns = parser.parse_known_args(command_argv(command) or ["status"], env_vars=env)[0]
            value = values[flag[2:]]
            assert getattr(ns, action.dest) == (action.type(value) if action.type else value), flag
            checked += 1
        if "config" in names:
            assert names["config"] == flag[2:]
            conf = write(tmp_path, "".join("%s = %s\n" % item for item in values.items()), name="sample.conf")
            settings = config.parse(["--config", conf] + (command_argv(command) or ["status"]), env={})
            value = action.type(values[flag[2:]])
            if action.dest in config.Settings._fields:
                assert getattr(settings, action.dest) == value, flag
            elif action.dest in config.Target._fields:
                assert getattr(settings.targets[0], action.dest) == value, flag
            checked += 1
    assert checked


@pytest.mark.parametrize("command", (None,) + config.COMMANDS)
def test_options_that_advertise_no_environment_variable_are_refused_there(command):
    for flag, action in visible_options(config.build_parser(command)).items():
        if flag in ("--help", "--version") or "env" in advertised(action):
            continue
        name = "QUIESCE_" + flag[2:].upper().replace("-", "_")
        assert "not read from the environment" in config_error(command_argv(command) or ["status"],
                                                                env={name: "1"}), flag


def help_options(command):
    return set(visible_options(config.build_parser(command))) - {"--help", "--version"}


def test_each_command_lists_only_its_own_options():
    common = {"--config", "--runtime-dir"}
    assert help_options(None) == common
    assert help_options("status") == common | {"--json", "--release-on-fs-thaw"}
    assert help_options("unregister") == common | {"--all"}
    verify = help_options("verify")
    assert {"--skip-table-check", "--check-timeout", "--socket", "--connect-timeout"} <= verify
    assert not verify & {"--json", "--cycle", "--apply", "--lock-timeout", "--all", "--caller"}
    assert {"--apply", "--yes", "--pitr-until"} <= help_options("restore-plan")
    assert "--cycle" in help_options("check") and "--json" not in help_options("check")
    assert {"--caller", "--lock-timeout", "--on-failure"} <= help_options("freeze") & help_options("hook")
    # Every option is some command's, except the two test-only ones.
    everyone = set().union(*(help_options(c) for c in config.COMMANDS))
    assert {"--" + o.key for o in config.OPTIONS} - everyone == {"--root", "--instance"}


def test_command_help_shows_defaults_and_config_keys(capsys):
    with pytest.raises(SystemExit) as info:
        config.parse(["freeze", "--help"], env={})
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "usage: quiesce freeze" in out
    assert "(default 300, at most 86400) [config: lock-timeout; env: QUIESCE_LOCK_TIMEOUT]" in out
    assert "--json" not in out and "QUIESCE_JSON" not in out and "--apply" not in out


@pytest.mark.parametrize("argv,command", [
    (["--config", "{conf}", "status"], "status"), (["status", "--config", "{conf}"], "status"),
    (["-c{conf}", "hook", "thaw", "x"], "hook"), (["hook", "thaw", "--config={conf}"], "hook"),
    (["--runtime-dir", "/srv/rt", "thaw", "--config", "{conf}"], "thaw"),
    (["--socket", "/s", "-c", "{conf}", "freeze", "--user", "u"], "freeze"),
    (["--config", "{conf}", "--user", "hook", "freeze"], "freeze"),
])
def test_options_go_before_or_after_the_command(tmp_path, argv, command):
    conf = write(tmp_path, "lock-timeout = 42\n")
    settings = config.parse([word.format(conf=conf) for word in argv], env={})
    assert (settings.command, settings.lock_timeout, settings.config_file) == (command, 42, conf)


def test_options_of_other_commands_still_parse_but_warn(capsys):
    settings = config.parse(["status", "--cycle", "--lock-timeout", "60"], env={})
    assert (settings.command, settings.cycle, settings.lock_timeout) == ("status", True, 60)
    assert "--cycle, --lock-timeout have no effect on status" in capsys.readouterr().err
    config.parse(["--lock-timeout", "60", "freeze", "--caller", "x"], env={})
    # The environment and the config file are shared by every command: no warning there.
    config.parse(["status"], env={"QUIESCE_LOCK_TIMEOUT": "60"})
    assert "no effect" not in capsys.readouterr().err


def test_every_config_key_is_advertised_by_a_command_that_uses_it():
    advertised_keys = {advertised(action).get("config") for parser in config.all_parsers().values()
                       for action in visible_options(parser).values()}
    assert set(config._file_keys(config.build_parser())) <= advertised_keys


def _write_private(path, text):
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def test_drop_ins_are_read_after_the_file_in_name_order_and_win(tmp_path):
    conf = str(tmp_path / "quiesce.conf")
    _write_private(conf, "lock-timeout = 100\nacquire-timeout = 4\n[instance:a]\nsocket = /run/a.sock\n")
    drop = str(tmp_path / config.DROP_IN_DIR)
    _write_private(drop + "/20-site.conf", "lock-timeout = 200\n[instance:a]\nuser = qa\n")
    _write_private(drop + "/10-base.conf", "lock-timeout = 150\nconnect-timeout = 3\n")
    for leftover in ("20-site.conf~", "20-site.conf.dpkg-old", ".hidden.conf", "notes.txt"):
        _write_private(drop + "/" + leftover, "lock-timeout = banana\n")
    settings = config.parse(["--config", conf, "status"])
    assert (settings.lock_timeout, settings.acquire_timeout, settings.connect_timeout) == (200.0, 4.0, 3.0)
    (target,) = settings.targets
    assert (target.socket, target.user) == ("/run/a.sock", "qa")
    assert settings.config_files == (conf, drop + "/10-base.conf", drop + "/20-site.conf")


def test_drop_ins_alone_without_the_config_file(tmp_path, monkeypatch):
    """Written before the package is installed: the default config file is not there yet."""
    monkeypatch.setattr(paths, "CONFIG_FILE", str(tmp_path / "quiesce.conf"))     # never created
    drop_in = str(tmp_path / config.DROP_IN_DIR / "00-disarmed.conf")
    _write_private(drop_in, "enabled = false\n")
    settings = config.parse(["hook", "freeze"], env={})
    assert settings.enabled is False
    assert settings.config_file is None and settings.config_files == (drop_in,)


def test_a_drop_in_error_names_its_own_file_and_line(tmp_path):
    conf = str(tmp_path / "quiesce.conf")
    _write_private(conf, "lock-timeout = 100\n")
    bad = str(tmp_path / config.DROP_IN_DIR / "50-x.conf")
    _write_private(bad, "\nlock-timeuot = 5\n")
    with pytest.raises(ConfigError, match=re.escape("config file %s line 2: unknown key lock-timeuot" % bad)):
        config.parse(["--config", conf, "status"])
    os.chmod(bad, 0o666)
    with pytest.raises(ConfigError, match="writable by group or others"):
        config.parse(["--config", conf, "status"])
    os.chmod(bad, 0o600)
    os.chmod(str(tmp_path / config.DROP_IN_DIR), 0o777)
    with pytest.raises(ConfigError, match="drop-in directory .* writable by group or others"):
        config.parse(["--config", conf, "status"])


def test_enabled_false_is_read_from_a_drop_in(tmp_path):
    conf = str(tmp_path / "quiesce.conf")
    _write_private(conf, "")
    assert config.parse(["--config", conf, "hook", "freeze"]).enabled is True
    _write_private(str(tmp_path / config.DROP_IN_DIR / "00-disarmed.conf"), "enabled = false\n")
    assert config.parse(["--config", conf, "hook", "freeze"]).enabled is False
