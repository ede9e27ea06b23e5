"""Reading the metrics file (Prometheus' text format), checking its form as it goes."""

from __future__ import annotations

import re

# One sample line of the text format 0.0.4: name, optional {labels}, a number, no timestamp.
_INNER = r'(?:[^"\\\n]|\\.)*'


_VALUE = f'"{_INNER}"'


_LABEL = re.compile(rf'([a-zA-Z_][a-zA-Z0-9_]*)="({_INNER})"')


_SAMPLE = re.compile(
    r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    rf"(?:\{{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*={_VALUE},?)*)\}})?"
    r" (?P<value>-?[0-9.e+]+)"
)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, labels); asserts the format line by line."""
    assert text.endswith("\n")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    helped: set[str] = set()
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind == "gauge"
            assert name in helped, f"TYPE before HELP for {name}"
            typed.add(name)
            continue
        m = _SAMPLE.fullmatch(line)
        assert m, f"not a sample line: {line!r}"
        assert m["name"] in typed, f"sample before its TYPE: {line!r}"
        assert m["name"].startswith("dnsmaster_")
        labels = tuple(_LABEL.findall(m["labels"] or ""))
        key = (m["name"], labels)
        assert key not in samples, f"duplicate sample {key}"
        samples[key] = float(m["value"])
    return samples
