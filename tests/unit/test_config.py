import os

import pytest

from quiesce import config, paths
from quiesce.errors import ConfigError


def write(tmp_path, text, mode=0o600, name="quiesce.conf"):
    path = tmp_path / name
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("QUIESCE_"):
            monkeypatch.delenv(key)


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
    (["frobnicate"], "invalid choice"),
    ([], "no command given"),
    (["freeze", "--lock-timeout", "-1"], "greater than 0"),
    (["freeze", "--lock-timeout", "abc"], "not a number"),
    (["freeze", "--acquire-timeout", "50", "--lock-timeout", "10"], "shorter than lock-timeout"),
    (["freeze", "--runtime-dir", "relative"], "absolute"),
    (["freeze", "--release-on-fs-thaw", "maybe"], "not a boolean"),
    (["freeze", "--port", "70000"], "port"),
    (["freeze", "extra"], "unexpected argument"),
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
    with pytest.raises(ConfigError, match="instance a: 'x' is not a port number"):
        config.parse(["--config", write(tmp_path, "[instance:a]\nport = x\n"), "freeze"])
