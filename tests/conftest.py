"""Shared test plumbing.

Tests that need a real component (tinydns-data, tinydns, sshd, daemontools, runit,
strace, vim, Debian's python3, the C accelerator, axfrdns, tcpserver, NSD, Knot) ask
for it by a fixture: the lab's (``lab``, ``slaves``, ``private_lab``, from
:mod:`tests.lab.shared`) or one of :data:`REAL_FIXTURES`.
So do tests that start dnsmaster as a process (``daemon_process``, ``dnsmaster_cli``),
and the long runs of property tests the unit lane samples (``thorough``).
Under CI=true a missing component fails the test (CI installs them all), elsewhere
the test is skipped with the reason, so a laptop without Debian's packages can
still run the pure-core tests.

Asking by fixture is also what marks a test ``real``: :func:`pytest_collection_modifyitems`
reads each test's fixtures, so ``pytest -m "not real"`` is the quick unit lane and
``-m real`` the rest, with no marker to forget in a test module.

Hypothesis runs with one profile, registered and loaded here; a test states only how
many examples it wants.
"""

from __future__ import annotations

import compileall
import contextlib
import gc
import io
import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import CodeType, FrameType
from typing import TYPE_CHECKING, NoReturn

import pytest
from hypothesis import HealthCheck, settings

from dnsmaster import log

if TYPE_CHECKING:
    from tests.lab.daemonrun import DaemonProcess

# The lab helpers assert as tests do: rewritten, their failures say what was compared.
pytest.register_assert_rewrite("tests.lab")

# The lab (sshd, tinydns, the slave account) for every test that asks for it, one per
# test process, reset between tests.
pytest_plugins = ["tests.lab.shared"]

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "vectors"  # copied from the spec's tdspec-vectors, with SUMS.tsv
IN_CI = os.environ.get("CI", "").lower() == "true"

# The same examples on every run and nothing kept between runs, so CI's verdict does
# not depend on the run before; no deadline, since the examples run on shared,
# loaded machines (and some run tinydns-data). ``--hypothesis-profile explore`` draws
# new examples instead, to look for bugs rather than to judge a change.
settings.register_profile(
    "dnsmaster",
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("explore", settings.get_profile("dnsmaster"), derandomize=False)
settings.load_profile("dnsmaster")

#: DNSMASTER_FULL_EXAMPLES=1: the long property runs draw the counts their tests state
#: (:func:`examples`); otherwise a quarter, what a five-minute suite affords.
FULL_EXAMPLES = os.environ.get("DNSMASTER_FULL_EXAMPLES", "") == "1"


def examples(full: int, share: int = 4) -> int:
    """How many examples a long property run draws: ``full`` under
    DNSMASTER_FULL_EXAMPLES=1, else a quarter of it (at least 25). A test states the
    count that judges a change to what it covers; CI's runs, derandomized, draw the
    same smaller set every time. A property that other runs of the suite also hold on
    the same strategy may draw a smaller ``1/share`` of its count there (and say
    which runs those are)."""
    return full if FULL_EXAMPLES else max(25, full // share)


#: Fixtures that give a real component: a test that uses one, itself or through
#: another fixture, is marked ``real`` at collection.
REAL_FIXTURES = frozenset(
    {
        "lab",  # tests/lab/shared.py: sshd, tinydns, the ssh client, root
        "slaves",
        "worker_lab",
        "private_lab",
        "sshd_bin",
        "tinydns_data_bin",
        "strace_bin",
        "vim_bin",
        "daemontools",
        "runit_tools",
        "debian_python",
        "accelerator",
        "axfrdns_bin",  # the secondaries' side (issue 20): axfrdns under tcpserver, NSD, Knot
        "tcpserver_bin",
        "nsd_bin",
        "knotd_bin",
        "daemon_process",  # dnsmaster run as a process (DaemonProcess, site.Local, site.Rig)
        "dnsmaster_cli",  # dnsmaster's command line in a subprocess
        "thorough",  # the long run of a property the unit lane samples
    }
)


def pytest_configure(config: pytest.Config) -> None:
    """Under PYTHONDONTWRITEBYTECODE, every Python the tests start would compile
    dnsmaster's sources anew: a tenth of a second of CPU at each of the suite's many
    starts. The package is compiled once, here, into its ``__pycache__`` (ignored by
    git), which every later process reads even under that variable. Not into a
    PYTHONPYCACHEPREFIX: a prefix hides the installed bytecode of the standard
    library and of every dependency, and each start then compiled asyncssh,
    cryptography's wrappers and asyncio anew (0.5 s of CPU became 1.8-2.3 s)."""
    if (
        not sys.flags.dont_write_bytecode
        or hasattr(config, "workerinput")
        or os.environ.get(PREWRITE_ENV)
    ):
        return
    compileall.compile_dir(HERE.parent / "dnsmaster", quiet=1, force=False)
    whole = config.args_source is pytest.Config.ArgsSource.TESTPATHS
    if config.getoption("numprocesses", None) and whole:
        prewrite_test_modules()


#: Set in the processes :func:`prewrite_test_modules` starts.
PREWRITE_ENV = "DNSMASTER_TESTS_PREWRITE"


def prewrite_test_modules() -> None:
    """Each xdist worker imports every test module, and pytest rewrites the asserts
    of each (8 s of CPU for this suite) unless it finds them rewritten in
    ``__pycache__``, which it writes only when bytecode may be written. For a run
    of the whole suite, two collect-only runs with bytecode allowed write what is
    missing, for every worker to read: four rewrites at once become two halves of
    one. A failure here costs only that time: each worker then rewrites as before."""
    files = sorted(
        (f for f in HERE.rglob("test_*.py") if not rewritten(f)), key=lambda f: -f.stat().st_size
    )
    if not files:
        return
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "", PREWRITE_ENV: "1"}
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist"]
    argv += ["-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(HERE.parent)]
    runs = [
        subprocess.Popen(
            [*argv, *map(str, files[half::2])],
            cwd=HERE.parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for half in (0, 1)
    ]
    for run in runs:
        run.wait()


def rewritten(test: Path) -> bool:
    """Whether pytest's rewrite of ``test`` is in its ``__pycache__`` (newer than
    the source; pytest checks the source's size and mtime when it reads it)."""
    tag = f"{sys.implementation.cache_tag}-pytest-{pytest.__version__}"
    pyc = test.parent / "__pycache__" / f"{test.stem}.{tag}.pyc"
    try:
        return pyc.stat().st_mtime >= test.stat().st_mtime
    except FileNotFoundError:
        return False


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per CPU, since most tests spend their time waiting on
    a subprocess, a server or a timer. On 2 CPUs under a load of 5-6 from other
    runs, the unit lane took 4:06 with 4 workers against 5:36 with 2."""
    return 2 * (os.cpu_count() or 1)


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Iterator[None]:
    """Mark ``real`` every test that asks for a real component (see REAL_FIXTURES).

    ``-m`` selects at collection, before any fixture runs, so the marker must come
    from the names a test asks for: here, before the selection. The ``path``
    fixture's accelerated half needs the accelerator; its pure half needs nothing.

    After the selection, a property test whose long run (``NAME_thorough``) is
    also selected is left out: it is a sample of the same property, for the unit
    lane alone, and the full suite need not pay for it twice. Then, on an xdist
    worker, the tests of :data:`LONG_FIRST` go to the heads of the workers' first
    shares (:func:`long_first`), so that they start first.
    """
    real = pytest.mark.real
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        if names & REAL_FIXTURES or params.get("path") == "accelerated":
            item.add_marker(real)
    yield
    long_runs = {item.nodeid.replace("_thorough", "", 1) for item in items if is_long_run(item)}
    samples = [item for item in items if item.nodeid in long_runs and not is_long_run(item)]
    if samples:
        config.hook.pytest_deselected(items=samples)
        items[:] = [item for item in items if item not in samples]
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        order = long_first([it.nodeid for it in items], LONG_FIRST, workerinput["workercount"])
        items[:] = [items[i] for i in order]


#: Node ids of the longest tests, longest first (seconds on the 2-core machine at a
#: load of 12, about three times a quiet run's). Under ``--dist worksteal`` a worker
#: runs its share of the collection in order and an idle worker steals from the end of
#: a busy one's: a long test late in a share starts late, and runs on alone at the end
#: of the suite. These go to the heads of the shares instead. An id that names no test
#: is ignored: the list is about time.
LONG_FIRST = (
    "tests/test_readme.py::test_readme_walkthrough",  # 110 (two runs of 100 before)
    "tests/benchmarks/test_soak.py::test_short_soak",  # 76
    "tests/core/test_accel.py::test_data_files",  # 57
    "tests/test_docs.py::test_manual_builds_without_warnings",  # 47
    "tests/slave/test_secondary_service.py::test_concurrent_pushes_from_both_masters",  # 44
    "tests/slave/test_masters_crash.py::TestKilled::test_kill_at_every_step[push]",  # 36
    "tests/slave/test_receive_crash.py::TestKilled::test_kill_at_random_moments",  # 33
    "tests/slave/test_receive_concurrent.py::TestTwoReceivers::test_newer_build_wins",  # 28
)


def long_first(nodeids: Sequence[str], long: Sequence[str], workers: int) -> list[int]:
    """The order (positions in ``nodeids``) that puts the tests named in ``long`` at
    the heads of the shares ``--dist worksteal`` first hands ``workers`` workers,
    dealt in ``long``'s order across the shares; the other tests keep their order.

    xdist 3 splits the collection into contiguous shares, each worker in turn taking
    the tests left divided by the workers left (WorkStealingScheduling.check_schedule).
    Every worker orders its collection this way, and xdist checks that they agree.
    """
    rank = {nodeid: i for i, nodeid in enumerate(long)}
    first = sorted((i for i, n in enumerate(nodeids) if n in rank), key=lambda i: rank[nodeids[i]])
    if not first or workers < 2:
        return list(range(len(nodeids)))
    rest = [i for i, n in enumerate(nodeids) if n not in rank]
    order: list[int] = []
    left, taken = len(nodeids), 0
    for worker in range(workers):
        size = left // (workers - worker)
        left -= size
        head = first[worker::workers]
        fill = max(0, size - len(head))
        order += head + rest[taken : taken + fill]
        taken += fill
    return order + rest[taken:]


def is_long_run(item: pytest.Item) -> bool:
    return "thorough" in getattr(item, "fixturenames", ()) and str(
        getattr(item, "originalname", "")
    ).endswith("_thorough")


#: DNSMASTER_TEST_CPU=FILE: each test's CPU and wall seconds are appended to FILE,
#: one JSON line a test (from every worker), to find what the suite spends its time on.
CPU_LOG_ENV = "DNSMASTER_TEST_CPU"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under :data:`CPU_LOG_ENV`, what one test cost (setup, call and teardown): the
    CPU of this process, of the children it reaped, and of the children that run on
    (the lab's sshd, whose reaped children are each push's receiver), and wall time."""
    out = os.environ.get(CPU_LOG_ENV)
    if not out:
        return (yield)
    own, reaped, running, start = *cpu_seconds(), children_cpu(), time.monotonic()
    try:
        return (yield)
    finally:
        own_after, reaped_after = cpu_seconds()
        running_after = children_cpu()
        # A child reaped during the test is in ``reaped_after`` with its whole life.
        spent = sum(running_after.values()) - sum(running.values())
        line = {
            "test": item.nodeid,
            "cpu": round(own_after - own, 3),
            "children": round(reaped_after - reaped + spent, 3),
            "wall": round(time.monotonic() - start, 3),
        }
        with open(out, "a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")


def cpu_seconds() -> tuple[float, float]:
    """User plus system CPU seconds: this process's, and its reaped children's."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def children_cpu() -> dict[int, float]:
    """CPU seconds of each running child of this process, with the children it reaped.

    The children are listed by /proc/self/task/*/children, not found by reading every
    process's stat: on a busy machine that scan cost 15-20 ms of CPU a test, most of
    what a small test was measured at (a module of 250 such tests: 5 s against 0.7 s).
    """
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    me = os.getpid()
    for pid in child_pids():
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the name: state ppid ... utime(12) stime(13) cutime(14) cstime(15).
        if int(fields[1]) == me:
            found[pid] = sum(int(v) for v in fields[11:15]) / tick
    return found


def child_pids() -> set[int]:
    """This process's children: from each thread's ``children`` file where the kernel
    has them (CONFIG_PROC_CHILDREN), else every process in /proc (checked by its ppid)."""
    pids: set[int] = set()
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children", encoding="ascii") as f:
                pids.update(int(pid) for pid in f.read().split())
    except FileNotFoundError:
        return {int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()}
    return pids


@pytest.fixture(autouse=True)
def log_set_up_per_test() -> Iterator[None]:
    """What a command run in process sets up for its log ends with the test.

    The command sets its log's format, level and stream (perhaps pytest's capture
    of that test, closed after it) and hands Python's warnings to that log; a later
    test in the same worker that logs without setting up would inherit them, or
    write to the closed file (``I/O operation on closed file``)."""
    shown = warnings.showwarning
    yield
    log.configure()
    warnings.showwarning = shown


@pytest.fixture(autouse=True)
def unit_lane_starts_no_dnsmaster(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the ``real`` lane, a test that starts dnsmaster's command line fails.

    The lane is chosen by the fixtures a test asks for, so a test that started the
    daemon or a command without ``daemon_process``/``dnsmaster_cli`` would slip into
    the unit lane unnoticed; this makes it fail at once instead. What dnsmaster
    itself starts, in process, stays allowed: the local transport runs ``dnsmaster
    receive`` as the product does.
    """
    if request.node.get_closest_marker("real"):
        return
    original = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen[bytes], args: object, *rest: object, **kw: object) -> None:
        if runs_dnsmaster(args) and not started_by_dnsmaster():
            pytest.fail(
                f"{request.node.nodeid} starts dnsmaster ({args!r}) without asking for the "
                "daemon_process or dnsmaster_cli fixture, which put it in the real lane",
                pytrace=False,
            )
        original(self, args, *rest, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def runs_dnsmaster(args: object) -> bool:
    """Whether a Popen's argv runs a dnsmaster command (``-m dnsmaster`` or the script)."""
    if isinstance(args, str | bytes | os.PathLike) or not isinstance(args, Sequence):
        return False
    argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
    if argv and os.path.basename(argv[0]) == "dnsmaster":
        return True
    return any(a == "-m" and b == "dnsmaster" for a, b in itertools.pairwise(argv))


def started_by_dnsmaster() -> bool:
    """Whether the package's own code, not the test's, is starting the process."""
    import dnsmaster  # noqa: PLC0415 - conftest loads before the package is needed

    package = os.path.dirname(dnsmaster.__file__) + os.sep
    frame = sys._getframe(2)  # who called Popen, and up the stack
    while frame is not None:
        if frame.f_code.co_filename.startswith(package):
            return True
        frame = frame.f_back
    return False


@pytest.fixture(scope="session")
def thorough() -> None:
    """Use (``usefixtures``) in the long run of a property test whose short run,
    a smaller sample of the same property, is in the unit lane: the long one goes
    to the ``real`` (CI) lane. Session-scoped, so hypothesis tests may use it."""


@pytest.fixture
def daemon_process() -> type[DaemonProcess]:
    """``dnsmaster run`` as a process: :class:`tests.lab.daemonrun.DaemonProcess`.

    Also what a test that starts the daemon through :class:`tests.lab.site.Local`
    or ``Rig`` asks for (``usefixtures``), so it is marked ``real``.
    """
    from tests.lab.daemonrun import DaemonProcess  # noqa: PLC0415 - tests.lab imports this module

    return DaemonProcess


@pytest.fixture
def dnsmaster_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``python -m dnsmaster ARGS...`` in a subprocess, its output captured as text.

    Tests that run the command line their own way ask for it by ``usefixtures``,
    so they are marked ``real`` all the same.
    """
    from tests.lab.daemonrun import PROJECT  # noqa: PLC0415 - tests.lab imports this module

    def run(
        *args: str | os.PathLike[str], env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dnsmaster", *map(os.fspath, args)],
            capture_output=True,
            text=True,
            check=False,
            env=dict(os.environ, PYTHONPATH=str(PROJECT), **(env or {})),
            timeout=timeout,
        )

    return run


class CommandTimeout(BaseException):
    """A command :func:`dnsmaster_here` runs overran its time.

    A BaseException, as KeyboardInterrupt is: code that must not raise (a log
    handler's ``except Exception``) would otherwise swallow it, and the command
    would go on waiting."""


def dnsmaster_here(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``dnsmaster ARGS...`` run by its main() in this process, as ``python -m
    dnsmaster`` would run it: exit status, stdout and stderr, without $DNSMASTER_CONFIG
    unless ``env`` gives it (``env`` is added to the environment for the run).

    What a test judges by a command's output and exit status, not by its being a
    process, costs none of a start's 0.4-0.6 s of CPU this way. Only for commands that
    end (not ``run``), and not from a running event loop (the commands start their
    own). The tests that need a process keep one (``dnsmaster_cli``): the exit status
    ``python -m`` gives, what imports print at a start, a signal to the command.

    A command still running after ``timeout`` seconds is interrupted (SIGALRM) and
    fails the test, as a subprocess's timeout would, rather than hang the suite.
    """
    from dnsmaster.commands.main import main  # noqa: PLC0415 - the suite's own package

    argv = [os.fspath(a) for a in args]
    written = io.BytesIO(), io.BytesIO()
    out, err = (io.TextIOWrapper(b, encoding="utf-8", write_through=True) for b in written)
    saved = dict(os.environ)
    os.environ.pop("DNSMASTER_CONFIG", None)
    os.environ.update(env or {})

    done = threading.Event()

    def overdue(signum: int, frame: FrameType | None) -> None:
        if done.is_set() or (frame is not None and frame.f_code in gc_callback_codes()):
            # Raised in a gc callback (Hypothesis keeps one), it would be lost as
            # "Exception ignored"; the alarm rings again in a moment.
            return
        raise CommandTimeout(f"dnsmaster {' '.join(argv)} still ran after {timeout} s")

    def ring(main_thread: int) -> None:
        # Sent to this thread, not to the process: the kernel may give a process's
        # SIGALRM to any thread (execnet's, in an xdist worker), and a system call
        # blocked here (a lock's flock) would then never be interrupted. Rung again
        # until the command ends, in case a ring lands where it cannot raise.
        wait = timeout
        while not done.wait(wait):
            signal.pthread_kill(main_thread, signal.SIGALRM)
            wait = 0.1

    previous = signal.signal(signal.SIGALRM, overdue)
    bell = threading.Thread(target=ring, args=(threading.get_ident(),), daemon=True)
    bell.start()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as exit_:  # argparse's usage errors
                status = exit_.code if isinstance(exit_.code, int) else 1
    except CommandTimeout as overran:
        pytest.fail(
            f"{overran}\nstdout: {written[0].getvalue()!r}\nstderr: {written[1].getvalue()!r}"
        )
    finally:
        done.set()
        bell.join()
        signal.signal(signal.SIGALRM, previous)
        os.environ.clear()
        os.environ.update(saved)
        log.configure()
    stdout, stderr = (b.getvalue().decode() for b in written)
    return subprocess.CompletedProcess(["dnsmaster", *argv], status, stdout, stderr)


def gc_callback_codes() -> set[CodeType]:
    return {code for cb in gc.callbacks if (code := getattr(cb, "__code__", None)) is not None}


def require(program: str, package: str = "tinydns openssh-server") -> str:
    """Return the absolute path of ``program`` or fail (CI) / skip (elsewhere).

    ``package`` is what to install for it, for the message.
    """
    found = shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin")
    if found:
        return found
    missing(f"{program} not found: apt-get install -y {package}")


def require_accelerator() -> None:
    """The C accelerator (``dnsmaster/core/_ccompile.c``) is built and in use.

    Turned off on purpose (``DNSMASTER_PURE_PYTHON=1``) is a skip even in CI: that
    run tests the pure-Python path and says so. Not built is a missing component.
    """
    from dnsmaster.core import accel  # noqa: PLC0415 - only the tests that need it

    why_not = accel.found("compiler").why_not
    if why_not is None:
        return
    if accel.disabled():
        pytest.skip(f"{accel.PURE_PYTHON_ENV} turns the C accelerator off")
    missing(
        f"the C accelerator is {why_not}: apt-get install -y gcc python3-dev, "
        "then .venv/bin/pip install -e ."
    )


@pytest.fixture(params=["accelerated", "pure"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Both compile paths: the C accelerator and pure Python (a test that takes
    ``path`` runs on each; the accelerated one needs it built, as in CI)."""
    from dnsmaster.core import accel  # noqa: PLC0415 - only the tests that need it

    if request.param == "accelerated":
        require_accelerator()
    with accel.using("compiler", accel.compiler() if request.param == "accelerated" else None):
        yield request.param


def missing(reason: str) -> NoReturn:
    """A component the test needs is missing: fail under CI=true, skip elsewhere."""
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require_root(what: str) -> None:
    """``what`` needs root (tinydns chroots, sshd switches users)."""
    if os.geteuid() == 0:
        return
    missing(f"{what} needs root")


@pytest.fixture(scope="session")
def tinydns_data_bin() -> str:
    return require("tinydns-data")


@pytest.fixture(scope="session")
def accelerator() -> None:
    """Use (``usefixtures``) in tests of the C accelerator: see require_accelerator.

    Session-scoped, so hypothesis tests may use it too.
    """
    require_accelerator()


@pytest.fixture(scope="session")
def accelerator_or_pure() -> None:
    """For tests that always check pure Python and the C accelerator too when it is
    in use: not built fails under CI=true like any missing component; elsewhere, or
    turned off on purpose, the test runs on pure Python alone."""
    from dnsmaster.core import accel  # noqa: PLC0415 - only the tests that need it

    why_not = accel.found("compiler").why_not
    if why_not is None or not IN_CI or accel.disabled():
        return
    pytest.fail(
        f"the C accelerator is {why_not}: apt-get install -y gcc python3-dev, "
        "then .venv/bin/pip install -e .",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def sshd_bin() -> str:
    """OpenSSH's sshd, which only root may start as the lab does (it switches users)."""
    require_root("sshd")
    return require("sshd")


@pytest.fixture(scope="session")
def strace_bin() -> str:
    return require("strace", "strace")


@pytest.fixture(scope="session")
def vim_bin() -> str:
    """The real editor, whose way of saving the watcher must follow."""
    return require("vim", "vim")


@pytest.fixture(scope="session")
def daemontools() -> None:
    """daemontools' programs, which the shipped service directory runs under."""
    for tool in ("supervise", "svc", "svstat", "envdir", "setuidgid", "multilog"):
        require(tool, "daemontools")


@pytest.fixture(scope="session")
def runit_tools() -> None:
    """runit's programs, the other supervisor the manual sets dnsmaster up under."""
    for tool in ("chpst", "svlogd", "runsv", "runsvdir", "sv"):
        require(tool, "runit")


#: Debian's interpreter, which runs the receiver bundle on a real slave.
DEBIAN_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="session")
def debian_python() -> str:
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        missing(f"{DEBIAN_PYTHON} not found: apt-get install -y python3")
    return DEBIAN_PYTHON


@pytest.fixture(scope="session")
def axfrdns_bin() -> str:
    """djbdns' axfrdns, which chroots to its ROOT and drops to UID/GID: root only."""
    require_root("axfrdns")
    return require("axfrdns", "axfrdns")


@pytest.fixture(scope="session")
def tcpserver_bin() -> str:
    """ucspi-tcp's tcpserver, which runs axfrdns; its tcprules (the same package)
    compiles the rules file service-conf --axfrdns writes."""
    require("tcprules", "ucspi-tcp")
    return require("tcpserver", "ucspi-tcp")


@pytest.fixture(scope="session")
def nsd_bin() -> str:
    """NSD, a standard secondary (binds port 53 of a 127.0.1.N: root only)."""
    require_root("nsd")
    return require("nsd", "nsd")


@pytest.fixture(scope="session")
def knotd_bin() -> str:
    """Knot's server, a standard secondary and catalog consumer (root only, as NSD);
    its kdig (knot-dnsutils) is asked for too, for what tests ask it."""
    require_root("knotd")
    require("kdig", "knot-dnsutils")
    return require("knotd", "knot")
