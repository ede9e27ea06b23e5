"""Log lines as a supervisor's log service sees them."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from dnsmaster import log


class TestLog:
    def test_logfmt_without_timestamp(self) -> None:
        """Default: one logfmt line, level and event first, no time (multilog adds it)."""
        out = io.StringIO()
        log.configure(stream=out)
        log.get_logger().info("push.done", slave="ns2", serial=17, error="a b")
        assert out.getvalue() == 'level=info event=push.done slave=ns2 serial=17 error="a b"\n'

    def test_json_with_timestamp(self) -> None:
        """On request: JSON with an ISO timestamp."""
        out = io.StringIO()
        log.configure(fmt="json", timestamps=True, stream=out)
        log.get_logger().warning("verify.stale", slave="ns3")
        event = json.loads(out.getvalue())
        assert event["event"] == "verify.stale"
        assert event["level"] == "warning"
        assert event["timestamp"].endswith("Z")

    def test_level_filters(self) -> None:
        """Events below the configured level are dropped."""
        out = io.StringIO()
        log.configure(level="warning", stream=out)
        log.get_logger().info("push.line", line="x")
        assert out.getvalue() == ""

    def test_logfmt_quotes_as_structlog_did(self) -> None:
        """Values are quoted and escaped as structlog's LogfmtRenderer did when it wrote
        these lines: quotes only around a space, '=' or '"', backslashes doubled only
        then, newlines as \\n, None empty, bools as words, controls as \\xNN."""
        out = io.StringIO()
        log.configure(stream=out)
        log.get_logger().error(
            "x.y",
            a="p q",
            b='say "hi"',
            c="back\\slash",
            d="b\\s x",
            e=None,
            f=True,
            g=False,
            h=1.5,
            i="two\nlines",
            j="\x1b[2Jgone",
            k="=",
            m=[1, "a b"],
            n="",
        )
        assert out.getvalue() == (
            "level=error event=x.y "
            'a="p q" b="say \\"hi\\"" c=back\\slash d="b\\\\s x" e= f=true g=false h=1.5 '
            'i=two\\nlines j=\\x1b[2Jgone k="=" m="[1, \'a b\']" n=\n'
        )

    def test_json_keys_in_structlogs_order(self) -> None:
        """JSON: the event's keys, then event, level and timestamp, as before."""
        out = io.StringIO()
        log.configure(fmt="json", timestamps=True, stream=out)
        log.get_logger().critical("guard.held", serial=7, path=Path("/x"))
        event = json.loads(out.getvalue())
        assert list(event) == ["serial", "path", "event", "level", "timestamp"]
        assert event["path"] == "PosixPath('/x')"  # what is not JSON is shown by repr
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", event["timestamp"])

    def test_exc_info_becomes_the_traceback(self) -> None:
        """exc_info (the exception, or its sys.exc_info()) becomes ``exception``: the
        traceback as Python prints it, on the one line (escaped newlines)."""
        out = io.StringIO()
        log.configure(fmt="json", stream=out)
        try:
            raise ValueError("boom")
        except ValueError as exc:
            log.get_logger().error("daemon.crashed", exc_info=exc)
            log.get_logger().error("daemon.crashed", exc_info=True)
        log.get_logger().error("daemon.crashed", exc_info=True)  # nothing being handled
        first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
        assert first == second
        assert first["exception"].startswith("Traceback (most recent call last):\n")
        assert first["exception"].endswith("ValueError: boom")
        assert "exception" not in third
        assert "exc_info" not in third

    def test_default_is_the_stderr_of_the_moment(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without a stream the line goes to the sys.stderr of when it is logged, so
        a redirection (or a test's capture) that ended is never written to."""
        log.configure()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            log.get_logger().warning("a.b", x=1)
        log.get_logger().warning("c.d")
        assert err.getvalue() == "level=warning event=a.b x=1\n"
        assert capsys.readouterr().err == "level=warning event=c.d\n"

    def test_set_level_keeps_the_format(self) -> None:
        """set_level changes the level only (SIGHUP's reload)."""
        out = io.StringIO()
        log.configure(fmt="json", level="error", stream=out)
        log.get_logger().warning("a.b")
        log.set_level("debug")
        log.get_logger().debug("c.d")
        assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["c.d"]

    def test_capture_collects_instead_of_writing(self) -> None:
        """log.capture(): the events of the block, with their level, none written."""
        out = io.StringIO()
        log.configure(stream=out)
        with log.capture() as events:
            log.get_logger().warning("cache.failed", file="zones.a")
        assert events == [{"file": "zones.a", "event": "cache.failed", "log_level": "warning"}]
        assert out.getvalue() == ""

    def test_python_warnings_become_events(self) -> None:
        """capture_warnings: a Python warning is one python.warning line."""
        out = io.StringIO()
        log.configure(stream=out)
        with warnings.catch_warnings():  # restores showwarning and the filters
            warnings.simplefilter("always")
            log.capture_warnings()
            warnings.warn_explicit("old", DeprecationWarning, "m.py", 3)
        assert out.getvalue() == (
            "level=warning event=python.warning category=DeprecationWarning message=old "
            "where=m.py:3\n"
        )

    def test_a_librarys_logging_becomes_events(self) -> None:
        """A library's own logging (asyncio's, with no handler set up, as in a
        command's process; pytest sets its own, hence a process) is one python.log
        line, not its raw text; below a warning, nothing."""
        child = (
            "import logging\n"
            "from dnsmaster import log\n"
            "log.configure(fmt='json')\n"
            "logging.getLogger('asyncio').info('chatter')\n"
            "logging.getLogger('asyncio').warning('socket.send() raised exception.')\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, check=True, timeout=60
        )
        assert [json.loads(line) for line in proc.stderr.splitlines()] == [
            {
                "logger": "asyncio",
                "severity": "warning",
                "message": "socket.send() raised exception.",
                "event": "python.log",
                "level": "warning",
            }
        ]
