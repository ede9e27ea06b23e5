"""Log lines as a supervisor's log service sees them."""

from __future__ import annotations

import io
import json

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
