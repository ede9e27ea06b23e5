"""The TOML configuration: every mistake is a ConfigError naming the file and the key.

Most tests write a real file and call :func:`dnsmaster.config.load`; the CLI tests
run ``python -m dnsmaster`` and check that the message reaches stderr with exit 2.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import dnsmaster
from dnsmaster import config
from dnsmaster.commands.main import main as cli_main
from dnsmaster.errors import ConfigError
from dnsmaster.exits import EXIT_USAGE
from tests.conftest import require

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys as ssh-keygen writes them: ``plain`` (no passphrase, and its .pub),
    ``secret`` (passphrase, OpenSSH format), ``secret.pem`` (passphrase, PEM)."""
    ssh_keygen = require("ssh-keygen", "openssh-client")
    where = tmp_path_factory.mktemp("keys")
    for name, passphrase, extra in [
        ("plain", "", ()),
        ("secret", "hunter2", ()),
        ("secret.pem", "hunter2", ("-m", "PEM")),
    ]:
        kind = ("-t", "rsa", "-b", "2048") if extra else ("-t", "ed25519")
        subprocess.run(
            [ssh_keygen, "-q", *kind, *extra, "-N", passphrase, "-C", name, "-f", where / name],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return where


def install_key(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    target.chmod(0o600)
    return target


@pytest.fixture
def home(tmp_path: Path, keys: Path) -> Path:
    """A directory with a key and a known_hosts file, as a master would have."""
    install_key(keys / "plain", tmp_path / "id_ed25519")
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
    assert cfg.ipv6_int is True  # 6 lines publish the ip6.int PTR, as the IPv6 patch does
    assert cfg.daemon == config.DaemonOptions()
    assert cfg.push == config.PushOptions()
    assert cfg.log == config.LogOptions()


def test_full(home: Path) -> None:
    text = (
        BASE
        + 'state = "/var/lib/dnsmaster/state.json"\nuser = "dns"\nstrict = true\n'
        + "ipv6_int = false\n"
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
    install_key(home / "id_ed25519", home / "other_key")
    cfg = config.load(write(home, text))
    assert cfg.strict is True
    assert cfg.ipv6_int is False
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
    install_key(home / "id_ed25519", etc / "keys" / "a")
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


def passwd_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """This account's passwd entry says its home is ``home``; $HOME says elsewhere."""
    real = pwd.getpwuid(os.geteuid())
    entry = pwd.struct_passwd((real.pw_name, "x", real.pw_uid, real.pw_gid, "", str(home), "/"))
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: entry)
    monkeypatch.setenv("HOME", "/nonexistent/not-this-one")


def test_absolute_and_home_paths(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~ is the home in the account's passwd entry, not $HOME (a supervisor's starter's)."""
    passwd_home(monkeypatch, home)
    cfg = config.load(write(home, 'zones = "/srv/zones"\noutput = "~/out"\n'))
    assert cfg.zones == Path("/srv/zones")
    assert cfg.output == home / "out"


def test_home_without_passwd_entry(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No passwd entry: ~ is an error naming the key, never $HOME."""

    def missing(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", missing)
    err = load_error(home, 'zones = "z"\noutput = "~/out"\n')
    assert err.key == "output"
    assert "give an absolute path" in err.reason


def test_default_known_hosts_is_the_users(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SSH slaves and no known_hosts: ~/.ssh/known_hosts, never "no checking"."""
    passwd_home(monkeypatch, home)
    text = 'zones = "z"\noutput = "o"\n' + SLAVE
    err = load_error(home, text)
    assert err.key == "known_hosts"
    assert str(home / ".ssh" / "known_hosts") in err.reason
    (home / ".ssh").mkdir()
    (home / ".ssh" / "known_hosts").write_text("")
    assert config.load(home / "dnsmaster.toml").known_hosts == home / ".ssh" / "known_hosts"


def test_without_ssh_known_hosts_and_keys_are_not_read(home: Path) -> None:
    """A command that never opens SSH (status) loads a config whose SSH files are
    missing; any other load refuses it, saying how to create known_hosts."""
    text = 'zones = "z"\noutput = "o"\nknown_hosts = "nope"\nkey = "missing"\n' + SLAVE
    path = write(home, text)
    cfg = config.load(path, ssh=False)
    assert (cfg.known_hosts, cfg.key) == (home / "nope", home / "missing")
    err = load_error(home, text)
    assert err.key == "known_hosts"
    assert f"ssh-keyscan -p PORT HOST >> {home / 'nope'}" in err.reason
    # The key is the next thing an SSH command needs, and still checked.
    (home / "nope").write_text("")
    assert load_error(home, text).key == "key"


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
        (BASE + "ipv6_int = 0\n", "ipv6_int", "must be true or false, not an integer"),
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
    assert "known: compress, dns, dns_port, host, key, name" in err.reason
    err = load_error(home, BASE + "[push]\nparalel = 3\n")
    assert "keepalive_interval, parallel, timeout" in err.reason


def test_unreadable_file_named_with_its_path(home: Path) -> None:
    err = load_error(home, BASE + SLAVE + 'key = "keys/missing"\n')
    assert str(home / "keys" / "missing") in err.reason
    assert err.reason.endswith(": file does not exist")
    assert f"as user {pwd.getpwuid(os.geteuid()).pw_name} (uid {os.geteuid()})" in err.reason


# --------------------------------------------------------------------------- private keys


PASSPHRASE = "dnsmaster needs a key without a passphrase; make one with ssh-keygen -t ed25519 -N ''"


def key_error(home: Path, file: Path, *, name: str = "key") -> ConfigError:
    """The error for ``file`` given as the top-level key (or the first slave's)."""
    text = 'zones = "z"\noutput = "o"\nknown_hosts = "known_hosts"\n'
    if name == "key":
        text += f"key = {str(file)!r}\n" + SLAVE
    else:
        text += SLAVE + f"[[slave]]\nname = 'b'\nhost = 'h'\nkey = {str(file)!r}\n"
    err = load_error(home, text)
    assert err.key == name
    assert str(file) in err.reason, err.reason
    assert "Traceback" not in str(err)
    return err


@pytest.mark.parametrize("name", ["key", "slave[1].key"])
@pytest.mark.parametrize("source", ["secret", "secret.pem"])
def test_key_with_a_passphrase(home: Path, keys: Path, source: str, name: str) -> None:
    """OpenSSH and PEM keys with a passphrase: dnsmaster cannot ask for it."""
    file = install_key(keys / source, home / "with_passphrase")
    err = key_error(home, file, name=name)
    assert "encrypted with a passphrase" in err.reason
    assert PASSPHRASE in err.reason
    assert f"ssh-keygen -p -N '' -f {file}" in err.reason


def test_public_key_given_by_mistake(home: Path, keys: Path) -> None:
    err = key_error(home, keys / "plain.pub")
    assert err.reason.endswith("a public key, not a private key: name the file without .pub")
    renamed = install_key(keys / "plain.pub", home / "id_copy")
    err = key_error(home, renamed, name="slave[1].key")
    assert err.reason.endswith("a public key, not a private key")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (os.urandom(300), "not a private key: not in a format ssh-keygen writes"),
        (b"not really a key\n", "not a private key: not in a format ssh-keygen writes"),
        (b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n", "not a private key"),
        (b"", "empty file, not a private key"),
        (b"\n \n", "empty file, not a private key"),
        (b"#" * (1 << 20) + b"\n", "over 1 MiB: not a private key"),
    ],
    ids=["random", "text", "truncated", "empty", "blank", "huge"],
)
def test_not_a_private_key(home: Path, content: bytes, reason: str) -> None:
    file = home / "bad_key"
    file.write_bytes(content)
    file.chmod(0o600)
    assert reason in key_error(home, file).reason
    assert reason in key_error(home, file, name="slave[1].key").reason


def test_unreadable_keys(home: Path) -> None:
    """Each with the errno's words, as the build's errors give them."""
    (home / "dir").mkdir()
    assert key_error(home, home / "dir").reason.endswith("cannot read: is a directory")
    missing = key_error(home, home / "missing", name="slave[1].key")
    assert missing.reason.startswith(f"cannot read {home / 'missing'} as user ")
    assert missing.reason.endswith(": file does not exist")
    (home / "dangling").symlink_to(home / "nowhere")
    assert key_error(home, home / "dangling").reason.endswith(": file does not exist")
    os.mkfifo(home / "fifo")  # would block a plain open() for good
    assert key_error(home, home / "fifo").reason.endswith(
        "not a regular file, so not a private key"
    )


def test_good_keys_load(home: Path, keys: Path) -> None:
    """A plain key, also through a symlink; the same file for several slaves is fine."""
    (home / "link").symlink_to(home / "id_ed25519")
    text = BASE + SLAVE + 'key = "link"\n[[slave]]\nname = "b"\nhost = "h"\nkey = "link"\n'
    cfg = config.load(write(home, text))
    assert cfg.slaves[0].key == cfg.slaves[1].key == home / "link"


def test_unused_key_is_not_read(home: Path) -> None:
    """Only local slaves: the top-level key is never used, so a bad one is no error."""
    (home / "bad_key").write_bytes(b"garbage")
    text = 'zones = "z"\noutput = "o"\nkey = "bad_key"\n'
    text += '[[slave]]\nname = "l"\ntransport = "local"\nroot = "r"\n'
    assert config.load(write(home, text)).key == home / "bad_key"


def test_cli_refuses_a_key_with_a_passphrase(home: Path, keys: Path, cli: Cli) -> None:
    """``push`` stops at the config (exit 2) instead of failing every slave."""
    install_key(keys / "secret", home / "id_ed25519")
    path = write(home, BASE + SLAVE)
    status, err, _ = cli("push", "--config", str(path), "--no-build")
    assert status == EXIT_USAGE, err
    assert f"{path}: key: {home / 'id_ed25519'}: the private key is encrypted" in err
    assert PASSPHRASE in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- warnings


@pytest.fixture
def safe(home: Path) -> Path:
    """A config whose files all have safe modes, whatever the umask: no warnings."""
    (home / "z").mkdir()
    (home / "z").chmod(0o755)
    (home / "known_hosts").chmod(0o644)
    path = write(home, 'zones = "z"\noutput = "o"\nknown_hosts = "known_hosts"\n' + SLAVE)
    path.chmod(0o644)
    return path


def warnings_with(path: Path, top: str = "") -> tuple[str, ...]:
    """The warnings of the config at ``path``, with ``top`` added to its top level."""
    if top:
        path.write_text(top + path.read_text())
    return config.load(path).warnings


def test_no_warnings(home: Path, safe: Path) -> None:
    assert warnings_with(safe, 'key = "id_ed25519"\n') == ()


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o602])
def test_config_writable_by_anyone(home: Path, safe: Path, mode: int) -> None:
    safe.chmod(mode)
    assert warnings_with(safe) == (
        f"{safe}: the configuration file is writable by anyone (mode {mode:04o}): any local "
        f"user could point dnsmaster at other zones, keys or slaves; fix: chmod o-w {safe}",
    )


def test_group_writable_config_is_no_warning(home: Path, safe: Path) -> None:
    """A group of operators sharing the config is a choice, not a mistake."""
    safe.chmod(0o664)
    assert warnings_with(safe) == ()


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o757])
def test_zones_directory_writable_by_anyone(home: Path, safe: Path, mode: int) -> None:
    """Even with the sticky bit anyone can add a zones file."""
    (home / "z").chmod(mode)
    (warning,) = warnings_with(safe)
    assert warning.startswith(f"{home / 'z'}: the zones directory is writable by anyone")
    assert f"(mode {mode:04o})" in warning
    assert "publish records for any domain" in warning
    assert warning.endswith(f"fix: chmod o-w {home / 'z'}")


def test_zones_directory_missing_is_no_warning(home: Path, safe: Path) -> None:
    """The build says what is wrong with a missing zones directory."""
    (home / "z").rmdir()
    assert warnings_with(safe) == ()


def test_known_hosts_writable_by_anyone(home: Path, safe: Path) -> None:
    (home / "known_hosts").chmod(0o666)
    (warning,) = warnings_with(safe)
    assert warning.startswith(f"{home / 'known_hosts'}: the known_hosts file is writable")
    assert "pose as a slave" in warning
    assert warning.endswith(f"fix: chmod o-w {home / 'known_hosts'}")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o610, 0o601])
def test_key_open_to_others(home: Path, safe: Path, mode: int) -> None:
    """Any of 0o077, as OpenSSH counts it ("UNPROTECTED PRIVATE KEY FILE")."""
    key = home / "id_ed25519"
    key.chmod(mode)
    assert warnings_with(safe, 'key = "id_ed25519"\n') == (
        f"key: {key}: the private key has mode {mode:04o}, open to group or others: whoever "
        f"can read it can log in to the slaves, and OpenSSH refuses such a key; "
        f"fix: chmod 600 {key}",
    )


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_key_for_its_owner_only(home: Path, safe: Path, mode: int) -> None:
    (home / "id_ed25519").chmod(mode)
    assert warnings_with(safe, 'key = "id_ed25519"\n') == ()


def test_keys_warned_once_per_file(home: Path, safe: Path) -> None:
    """A key shared by the top level and a slave is one warning, under its first name."""
    shared, own = home / "id_ed25519", install_key(home / "id_ed25519", home / "b_key")
    shared.chmod(0o644)
    own.chmod(0o640)
    extra = '[[slave]]\nname = "b"\nhost = "h"\nkey = "b_key"\n'
    extra += '[[slave]]\nname = "c"\nhost = "h"\nkey = "id_ed25519"\n'
    safe.write_text(safe.read_text() + extra)
    warnings = warnings_with(safe, 'key = "id_ed25519"\n')
    assert [w.split(": ")[:2] for w in warnings] == [
        ["key", str(shared)],
        ["slave[1].key", str(own)],
    ]


def test_warnings_in_order(home: Path, safe: Path) -> None:
    """Config file, zones directory, known_hosts, then keys."""
    safe.chmod(0o666)
    (home / "z").chmod(0o777)
    (home / "known_hosts").chmod(0o666)
    (home / "id_ed25519").chmod(0o644)
    warnings = warnings_with(safe, 'key = "id_ed25519"\n')
    assert [w.split(": ")[0] for w in warnings] == [
        str(safe),
        str(home / "z"),
        str(home / "known_hosts"),
        "key",
    ]


def test_unused_key_is_no_warning(home: Path) -> None:
    """Only local slaves: the top-level key is not used, its mode does not matter."""
    (home / "id_ed25519").chmod(0o644)
    text = 'zones = "z"\noutput = "o"\nkey = "id_ed25519"\n'
    text += '[[slave]]\nname = "l"\ntransport = "local"\nroot = "r"\n'
    path = write(home, text)
    path.chmod(0o644)
    assert config.load(path).warnings == ()


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
    """``python -m dnsmaster ARGV``: for the error's shape as a process gives it, exit
    status and all, after the start's imports."""
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


#: main() in this process: (exit status, stderr, stdout).
Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The command line's main() run here, without $DNSMASTER_CONFIG: what a
    subprocess would say, at none of its start's cost. A subprocess (:func:`run_cli`)
    is kept for what only a process shows: the exit status ``python -m`` gives and
    what the imports of a start might print."""
    monkeypatch.delenv("DNSMASTER_CONFIG", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = cli_main(list(argv))
        out, err = capsys.readouterr()
        return status, err, out

    return run


#: Every command that reads the configuration, as a user would type it.
CONFIG_COMMANDS = [
    ["run"],
    ["build"],
    ["build", "--dry-run"],
    ["check"],
    ["push"],
    ["push", "--dry-run"],
    ["status"],
    ["status", "--live"],
    ["diff"],
    ["doctor"],
    ["wait", "1"],
    ["rollback"],
]

#: The ones run as processes too: the lightest start and the heaviest (asyncssh,
#: dnspython and watchdog imported before the configuration is read).
PROCESS_COMMANDS = (["push"], ["run"])


@pytest.mark.usefixtures("daemon_process")
def test_cli_one_shape_for_config_errors(home: Path, cli: Cli) -> None:
    """Whatever the command, a config error is the one line ``dnsmaster: FILE: key:
    reason`` and exit 2 (not a log event for some, a bare reason for others, and
    nothing else printed, no traceback), from main() and from a process."""
    path = write(home, BASE + "[push]\nparallel = 0\n")
    expected = (
        EXIT_USAGE,
        f"dnsmaster: {path}: push.parallel: must be from 1 to 1024, not 0\n",
        "",
    )
    for argv in PROCESS_COMMANDS:
        proc = run_cli(*argv, "--config", str(path))
        assert (proc.returncode, proc.stderr, proc.stdout) == expected, argv
    for argv in CONFIG_COMMANDS:
        assert cli(*argv, "--config", str(path)) == expected, argv
    for argv in (["build"], ["check"], ["push"], ["status"]):
        status, err, _ = cli(*argv)
        expected_err = "dnsmaster: no configuration: give --config FILE or set DNSMASTER_CONFIG\n"
        assert (status, err) == (EXIT_USAGE, expected_err), argv


def test_cli_ssh_commands_need_known_hosts(home: Path, cli: Cli) -> None:
    """What opens SSH refuses a missing known_hosts before connecting, saying how to
    create it; status without --live does not open SSH (tests/commands/test_status.py)."""
    path = write(home, BASE.replace('"known_hosts"', '"missing"') + SLAVE)
    for argv in (["push", "--no-build"], ["doctor"], ["status", "--live"]):
        status, err, _ = cli(*argv, "--config", str(path))
        assert status == EXIT_USAGE, argv
        assert err.startswith(
            f"dnsmaster: {path}: known_hosts: cannot read {home / 'missing'} as user "
        ), argv
        assert f"ssh-keyscan -p PORT HOST >> {home / 'missing'}" in err, argv


def test_cli_one_shape_for_unknown_slaves(home: Path, cli: Cli) -> None:
    path = write(home, BASE + SLAVE)
    for argv in (["push", "--no-build"], ["push", "--dry-run"], ["wait", "1"], ["diff"]):
        status, err, _ = cli(*argv, "--config", str(path), "--slave", "zz")
        expected = f"dnsmaster: {path}: slave: no such slave: zz\n"
        assert (status, err) == (EXIT_USAGE, expected), argv


def test_cli_uses_the_environment(home: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(home, BASE + SLAVE + 'protocol = "rsync"\n')
    monkeypatch.setenv("DNSMASTER_CONFIG", str(path))
    status, err, _ = cli("push")
    assert status == EXIT_USAGE
    assert "slave[0].protocol: must be one of" in err


@pytest.mark.usefixtures("dnsmaster_cli")
def test_cli_without_any_configuration() -> None:
    proc = run_cli("push")
    assert proc.returncode == EXIT_USAGE
    assert "no configuration: give --config FILE or set DNSMASTER_CONFIG" in proc.stderr


def test_cli_missing_config_file(tmp_path: Path, cli: Cli) -> None:
    status, err, _ = cli("push", "--config", str(tmp_path / "none.toml"))
    assert status == EXIT_USAGE
    assert f"{tmp_path / 'none.toml'}: cannot read" in err


@pytest.mark.parametrize("command", ["build", "check"])
def test_cli_in_process(home: Path, command: str, cli: Cli) -> None:
    """build and check read the config only for what --zones/--out do not give."""
    path = write(home, BASE + "[daemon]\ndebounce = 2\nmax_delay = 1\n")
    status, err, _ = cli(command, "--config", str(path))
    assert status == EXIT_USAGE
    assert "daemon.max_delay: must not be shorter than debounce" in err


def test_sample_config_documents_ipv6_int() -> None:
    """contrib/dnsmaster.toml lists the key with its default."""
    import dataclasses  # noqa: PLC0415
    import tomllib  # noqa: PLC0415

    sample = Path(dnsmaster.__file__).resolve().parent.parent / "contrib" / "dnsmaster.toml"
    default = {f.name: f.default for f in dataclasses.fields(config.Config)}["ipv6_int"]
    assert tomllib.loads(sample.read_text())["ipv6_int"] is default is True
