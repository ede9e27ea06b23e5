"""The TOML configuration: every mistake is a ConfigError naming the file and the key.

Most tests write a real file and call :func:`dnsmaster.config.load`; the CLI tests
run ``python -m dnsmaster`` and check that the message reaches stderr with exit 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dnsmaster import config
from dnsmaster.cli import EXIT_USAGE
from dnsmaster.cli import main as cli_main
from dnsmaster.errors import ConfigError

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A directory with a key and a known_hosts file, as a master would have."""
    (tmp_path / "id_ed25519").write_text("not really a key\n")
    (tmp_path / "known_hosts").write_text("")
    return tmp_path


def write(home: Path, text: str, name: str = "dnsmaster.toml") -> Path:
    path = home / name
    path.write_text(text)
    return path


BASE = 'zones = "zones"\noutput = "out"\nknown_hosts = "known_hosts"\nkey = "id_ed25519"\n'
SLAVE = '[[slave]]\nname = "a"\nhost = "192.0.2.1"\n'


def load_error(home: Path, text: str) -> ConfigError:
    path = write(home, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}: ")
    return info.value


# --------------------------------------------------------------------------- valid files


def test_minimal(home: Path) -> None:
    cfg = config.load(write(home, 'zones = "z"\noutput = "o"\n'))
    assert cfg.zones == home / "z"
    assert cfg.output == home / "o"
    assert cfg.state == home / "o" / "dnsmaster-state.json"
    assert cfg.slaves == ()
    assert cfg.known_hosts is None  # no SSH slave: nothing to check
    assert cfg.daemon == config.DaemonOptions()
    assert cfg.push == config.PushOptions()
    assert cfg.log == config.LogOptions()


def test_full(home: Path) -> None:
    text = (
        BASE
        + 'state = "/var/lib/dnsmaster/state.json"\nuser = "dns"\nstrict = true\n'
        + "[daemon]\ndebounce = 1\nmax_delay = 2.5\npoll = true\npoll_interval = 0.5\n"
        + "retry_initial = 2\nretry_max = 60\nstop_timeout = 5\nverify = false\n"
        + "verify_timeout = 1\n"
        + "[push]\nparallel = 4\nconnect_timeout = 3\nkeepalive_interval = 0\ntimeout = 30\n"
        + '[log]\nformat = "json"\ntimestamps = true\nlevel = "debug"\n'
        + SLAVE
        + 'port = 2222\ndns = "192.0.2.53"\ndns_port = 5353\nprotocol = "legacy"\n'
        + 'key = "other_key"\nuser = "root"\n'
        + '[[slave]]\nname = "b.example_1"\nhost = "192.0.2.2"\n'
        + '[[slave]]\nname = "local-1"\ntransport = "local"\nroot = "slaves/one"\n'
    )
    (home / "other_key").write_text("x")
    cfg = config.load(write(home, text))
    assert cfg.strict is True
    assert cfg.state == Path("/var/lib/dnsmaster/state.json")
    assert cfg.key == home / "id_ed25519"
    assert cfg.known_hosts == home / "known_hosts"
    assert cfg.daemon.debounce == 1.0
    assert cfg.daemon.max_delay == 2.5
    assert cfg.daemon.poll is True
    assert cfg.daemon.verify is False
    assert cfg.push == config.PushOptions(4, 3.0, 0.0, 30.0)
    assert cfg.log == config.LogOptions("json", True, "debug")
    a, b, local = cfg.slaves
    assert a == config.Slave(
        name="a",
        host="192.0.2.1",
        port=2222,
        user="root",
        key=home / "other_key",
        dns="192.0.2.53",
        dns_port=5353,
        protocol="legacy",
    )
    # Defaults: the top-level user, dns = host, port 22.
    assert (b.user, b.dns, b.port, b.key, b.protocol) == ("dns", "192.0.2.2", 22, None, "dnsmaster")
    assert local.transport == "local"
    assert local.root == home / "slaves" / "one"


def test_relative_paths_resolve_against_the_config_directory(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Not against the working directory: a config and its zones move together."""
    etc = home / "etc" / "dnsmaster"
    etc.mkdir(parents=True)
    (etc / "known_hosts").write_text("")
    path = write(
        etc,
        'zones = "zones"\noutput = "../out"\nstate = "st/state.json"\n'
        'known_hosts = "known_hosts"\n' + SLAVE + 'key = "keys/a"\n',
    )
    (etc / "keys").mkdir()
    (etc / "keys" / "a").write_text("k")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    cfg = config.load(path)
    assert cfg.zones == etc / "zones"
    assert cfg.output.resolve() == (home / "etc" / "out").resolve()
    assert cfg.state == etc / "st" / "state.json"
    assert cfg.known_hosts == etc / "known_hosts"
    assert cfg.slaves[0].key == etc / "keys" / "a"
    # A config named by a relative path: still its own directory, made absolute.
    monkeypatch.chdir(home)
    cfg = config.load(Path("etc/dnsmaster/dnsmaster.toml"))
    assert cfg.zones == etc / "zones"
    assert cfg.zones.is_absolute()


def test_absolute_and_home_paths(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(home))
    cfg = config.load(write(home, 'zones = "/srv/zones"\noutput = "~/out"\n'))
    assert cfg.zones == Path("/srv/zones")
    assert cfg.output == home / "out"


def test_default_known_hosts_is_the_users(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SSH slaves and no known_hosts: ~/.ssh/known_hosts, never "no checking"."""
    monkeypatch.setenv("HOME", str(home))
    text = 'zones = "z"\noutput = "o"\n' + SLAVE
    err = load_error(home, text)
    assert err.key == "known_hosts"
    assert str(home / ".ssh" / "known_hosts") in err.reason
    (home / ".ssh").mkdir()
    (home / ".ssh" / "known_hosts").write_text("")
    assert config.load(home / "dnsmaster.toml").known_hosts == home / ".ssh" / "known_hosts"


def test_local_slaves_need_no_known_hosts(home: Path) -> None:
    text = 'zones = "z"\noutput = "o"\nkey = "missing"\nknown_hosts = "missing"\n'
    text += '[[slave]]\nname = "l"\ntransport = "local"\nroot = "r"\n'
    cfg = config.load(write(home, text))
    assert cfg.slaves[0].host == ""


# --------------------------------------------------------------------------- file errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "nope.toml")
    assert info.value.key == ""
    assert "cannot read" in str(info.value)
    assert str(tmp_path / "nope.toml") in str(info.value)


def test_not_toml(home: Path) -> None:
    err = load_error(home, 'zones = "z\n')
    assert "not valid TOML" in err.reason


def test_not_utf8(home: Path) -> None:
    path = home / "bad.toml"
    path.write_bytes(b'zones = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(path)


# --------------------------------------------------------------------------- key errors


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        # missing required keys
        ('output = "o"\n', "zones", "missing"),
        ('zones = "z"\n', "output", "missing"),
        ('zones = ""\noutput = "o"\n', "zones", "must not be empty"),
        # unknown keys, at each level
        (BASE + 'zone = "z"\n', "zone", "unknown key"),
        (BASE + "[daemon]\ndebounse = 1\n", "daemon.debounse", "unknown key"),
        (BASE + "[push]\nparalel = 1\n", "push.paralel", "unknown key"),
        (BASE + '[log]\nformt = "json"\n', "log.formt", "unknown key"),
        (BASE + SLAVE + 'hots = "x"\n', "slave[0].hots", "unknown key"),
        (BASE + "[oops]\n", "oops", "unknown key"),
        # wrong types
        ("zones = 1\noutput = 'o'\n", "zones", "must be a string, not an integer"),
        (BASE + 'strict = "yes"\n', "strict", "must be true or false, not a string"),
        (BASE + "user = true\n", "user", "must be a string, not a boolean"),
        (BASE + 'daemon = "fast"\n', "daemon", "must be a table, not a string"),
        (BASE + "[daemon]\ndebounce = true\n", "daemon.debounce", "not a boolean"),
        (BASE + '[daemon]\ndebounce = "1s"\n', "daemon.debounce", "must be a number"),
        (BASE + "[daemon]\nverify = 1\n", "daemon.verify", "must be true or false"),
        (BASE + "[push]\nparallel = 2.5\n", "push.parallel", "must be an integer"),
        (BASE + "[push]\ntimeout = [1]\n", "push.timeout", "not an array"),
        (BASE + "[log]\ntimestamps = 1\n", "log.timestamps", "must be true or false"),
        (BASE + "[slave]\nname = 'a'\n", "slave", "must be an array, not a table"),
        (BASE + "slave = [1]\n", "slave[0]", "must be a table"),
        (BASE + SLAVE + 'port = "22"\n', "slave[0].port", "must be an integer, not a string"),
        (BASE + SLAVE + "port = 22.0\n", "slave[0].port", "must be an integer, not a float"),
        (BASE + SLAVE + "dns = 1\n", "slave[0].dns", "must be a string"),
        # bad choices
        (BASE + '[log]\nformat = "xml"\n', "log.format", "must be one of 'logfmt', 'json'"),
        (BASE + '[log]\nlevel = "loud"\n', "log.level", "not 'loud'"),
        (BASE + SLAVE + 'protocol = "rsync"\n', "slave[0].protocol", "'dnsmaster', 'legacy'"),
        (BASE + SLAVE + 'transport = "ftp"\n', "slave[0].transport", "'ssh', 'local'"),
        # numbers out of range
        (BASE + "[daemon]\ndebounce = -1\n", "daemon.debounce", "must be at least 0"),
        (BASE + "[daemon]\nmax_delay = -0.5\n", "daemon.max_delay", "must be at least 0"),
        (BASE + "[daemon]\nstop_timeout = -3\n", "daemon.stop_timeout", "at least 0"),
        (BASE + "[daemon]\nretry_initial = 0\n", "daemon.retry_initial", "at least 0.01"),
        (BASE + "[daemon]\npoll_interval = -1\n", "daemon.poll_interval", "at least 0.01"),
        (BASE + "[daemon]\nverify_timeout = nan\n", "daemon.verify_timeout", "at least"),
        (BASE + "[daemon]\ndebounce = 2\nmax_delay = 1\n", "daemon.max_delay", "debounce"),
        (BASE + "[daemon]\nretry_initial = 10\nretry_max = 5\n", "daemon.retry_max", "retry"),
        (BASE + "[push]\nparallel = 0\n", "push.parallel", "from 1 to 1024, not 0"),
        (BASE + "[push]\nparallel = -4\n", "push.parallel", "from 1 to 1024"),
        (BASE + "[push]\ntimeout = -1\n", "push.timeout", "at least 0.1"),
        (BASE + "[push]\nconnect_timeout = 0\n", "push.connect_timeout", "at least 0.1"),
        (BASE + "[push]\nkeepalive_interval = -1\n", "push.keepalive_interval", "at least 0"),
        (BASE + SLAVE + "port = 0\n", "slave[0].port", "from 1 to 65535"),
        (BASE + SLAVE + "port = 65536\n", "slave[0].port", "from 1 to 65535"),
        (BASE + SLAVE + "dns_port = -53\n", "slave[0].dns_port", "from 1 to 65535"),
        # slaves
        (BASE + "[[slave]]\nhost = 'h'\n", "slave[0].name", "missing"),
        (BASE + "[[slave]]\nname = ''\nhost = 'h'\n", "slave[0].name", "must not be empty"),
        (BASE + "[[slave]]\nname = 'a b'\nhost = 'h'\n", "slave[0].name", "'a b'"),
        (BASE + "[[slave]]\nname = 'a/../b'\nhost = 'h'\n", "slave[0].name", "letters"),
        (BASE + SLAVE + "[[slave]]\nname = 'b'\n", "slave[1].host", "slave 'b' needs a host"),
        (BASE + "[[slave]]\nname = 'a'\nhost = ''\n", "slave[0].host", "must not be empty"),
        (
            BASE + SLAVE + "[[slave]]\nname = 'b'\nhost = 'h'\n" + SLAVE,
            "slave[2].name",
            "duplicate slave name 'a'",
        ),
        (BASE + "[[slave]]\nname = 'l'\ntransport = 'local'\n", "slave[0].root", "tinydns root"),
        (BASE + SLAVE + 'user = ""\n', "slave[0].user", "must not be empty"),
        # files that must be readable
        (
            'zones = "z"\noutput = "o"\nknown_hosts = "nope"\nkey = "id_ed25519"\n' + SLAVE,
            "known_hosts",
            "cannot read",
        ),
        (
            'zones = "z"\noutput = "o"\nknown_hosts = "known_hosts"\nkey = "nope"\n' + SLAVE,
            "key",
            "cannot read",
        ),
        (
            'zones = "z"\noutput = "o"\nknown_hosts = "known_hosts"\nkey = "."\n' + SLAVE,
            "key",
            "cannot read",
        ),
        (BASE + SLAVE + 'key = "nope"\n', "slave[0].key", "cannot read"),
    ],
)
def test_errors_name_the_key(home: Path, text: str, key: str, reason: str) -> None:
    err = load_error(home, text)
    assert err.key == key
    assert reason in err.reason
    assert f": {key}: " in str(err)


def test_unknown_key_lists_the_known_ones(home: Path) -> None:
    err = load_error(home, BASE + SLAVE + "hots = 'x'\n")
    assert "known: dns, dns_port, host, key, name" in err.reason
    err = load_error(home, BASE + "[push]\nparalel = 3\n")
    assert "keepalive_interval, parallel, timeout" in err.reason


def test_unreadable_file_named_with_its_path(home: Path) -> None:
    err = load_error(home, BASE + SLAVE + 'key = "keys/missing"\n')
    assert str(home / "keys" / "missing") in err.reason
    assert "No such file or directory" in err.reason


# --------------------------------------------------------------------------- resolve_path


def test_resolve_path_option_wins() -> None:
    assert config.resolve_path("a.toml", {"DNSMASTER_CONFIG": "b.toml"}) == Path("a.toml")


def test_resolve_path_environment() -> None:
    assert config.resolve_path(None, {"DNSMASTER_CONFIG": "/etc/d.toml"}) == Path("/etc/d.toml")


@pytest.mark.parametrize("environ", [{}, {"DNSMASTER_CONFIG": ""}])
def test_resolve_path_neither(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"give --config FILE or set DNSMASTER_CONFIG"):
        config.resolve_path(None, environ)


# --------------------------------------------------------------------------- the CLI


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DNSMASTER_CONFIG"}
    environ["PYTHONPATH"] = str(PROJECT)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "dnsmaster", *argv],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["push", "run", "status"])
def test_cli_prints_the_error_and_exits_2(home: Path, command: str) -> None:
    path = write(home, BASE + "[push]\nparallel = 0\n")
    proc = run_cli(command, "--config", str(path))
    assert proc.returncode == EXIT_USAGE
    assert f"{path}: push.parallel: must be from 1 to 1024, not 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_cli_uses_the_environment(home: Path) -> None:
    path = write(home, BASE + SLAVE + 'protocol = "rsync"\n')
    proc = run_cli("push", env={"DNSMASTER_CONFIG": str(path)})
    assert proc.returncode == EXIT_USAGE
    assert "slave[0].protocol: must be one of" in proc.stderr


def test_cli_without_any_configuration() -> None:
    proc = run_cli("push")
    assert proc.returncode == EXIT_USAGE
    assert "no configuration: give --config FILE or set DNSMASTER_CONFIG" in proc.stderr


def test_cli_missing_config_file(tmp_path: Path) -> None:
    proc = run_cli("push", "--config", str(tmp_path / "none.toml"))
    assert proc.returncode == EXIT_USAGE
    assert f"{tmp_path / 'none.toml'}: cannot read" in proc.stderr


@pytest.mark.parametrize("command", ["build", "check"])
def test_cli_in_process(
    home: Path, command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """build and check read the config only for what --zones/--out do not give."""
    monkeypatch.delenv("DNSMASTER_CONFIG", raising=False)
    path = write(home, BASE + "[daemon]\ndebounce = 2\nmax_delay = 1\n")
    assert cli_main([command, "--config", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "daemon.max_delay: must not be shorter than debounce" in err


def test_cli_unknown_slave_name(home: Path) -> None:
    path = write(home, BASE + SLAVE)
    proc = run_cli("push", "--config", str(path), "--slave", "zz", "--no-build")
    assert proc.returncode == EXIT_USAGE
    assert "no such slave: zz" in proc.stderr
