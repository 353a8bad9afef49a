#!/usr/bin/python3
"""A strict parser for the Prometheus text exposition format (0.0.4), and its test: the sample
written by test_metrics (argv[1]: that binary) must parse, and hand-made broken texts must not.

parse(text) -> {family: {"type", "help", "samples": [(name, {label: value}, float)]}} and raises
ValueError on anything a Prometheus server would reject or that our renderer promises not to do:
a sample before its family's # TYPE, a TYPE/HELP twice, bad names, bad escapes, duplicate
series, histogram buckets not cumulative, not ending in le="+Inf", or _count != +Inf bucket."""

import math
import os
import re
import subprocess
import sys
import tempfile

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def _value(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", s):
        raise ValueError("bad number %r" % s)
    return float(s)


def _unescape(s, quote):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s):
                raise ValueError("dangling backslash")
            n = s[i + 1]
            if n == "n":
                out.append("\n")
            elif n == "\\":
                out.append("\\")
            elif n == '"' and quote:
                out.append('"')
            else:
                raise ValueError("bad escape \\%s" % n)
            i += 2
        elif c == "\n" or (quote and c == '"'):
            raise ValueError("unescaped %r" % c)
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _labels(s):
    """s: the text between { and }; returns a dict."""
    labels, i = {}, 0
    while i < len(s):
        m = re.match(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"", s[i:])
        if not m:
            raise ValueError("bad label at %r" % s[i:])
        name = m.group(1)
        i += m.end()
        j = i
        while j < len(s) and s[j] != '"':
            j += 2 if s[j] == "\\" else 1
        if j >= len(s):
            raise ValueError("unterminated label value")
        if name in labels:
            raise ValueError("label %s twice" % name)
        labels[name] = _unescape(s[i:j], True)
        i = j + 1
        if i < len(s):
            if s[i] != ",":
                raise ValueError("expected , at %r" % s[i:])
            i += 1
            if i == len(s):
                raise ValueError("trailing comma")
    return labels


def _family_of(name, families):
    if name in families:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and families.get(name[: -len(suffix)], {}).get("type") == "histogram":
            return name[: -len(suffix)]
    raise ValueError("sample %s has no # TYPE before it" % name)


def parse(text):
    if text and not text.endswith("\n"):
        raise ValueError("text does not end with a newline")
    families, current, seen = {}, None, set()
    for ln, line in enumerate(text.split("\n")[:-1], 1):
        try:
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                kind, rest = line[2:6], line[7:]
                name, _, arg = rest.partition(" ")
                if not NAME.match(name):
                    raise ValueError("bad metric name %r" % name)
                fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
                if fam["samples"]:
                    raise ValueError("%s for %s after its samples" % (kind, name))
                if kind == "HELP":
                    if fam["help"] is not None:
                        raise ValueError("HELP twice for %s" % name)
                    fam["help"] = _unescape(arg, False)
                else:
                    if fam["type"] is not None:
                        raise ValueError("TYPE twice for %s" % name)
                    if arg not in TYPES:
                        raise ValueError("bad type %r" % arg)
                    fam["type"] = arg
                current = name
                continue
            if line.startswith("#") or not line.strip():
                raise ValueError("unexpected comment or blank line")  # our renderer writes neither
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)\Z", line)
            if not m:
                raise ValueError("bad sample line")
            name, labels, value = m.group(1), _labels(m.group(3) or ""), _value(m.group(4))
            fname = _family_of(name, families)
            if fname != current:
                raise ValueError("sample of %s outside its family's block" % fname)
            fam = families[fname]
            if fam["type"] is None:
                raise ValueError("sample before # TYPE")
            key = (name, tuple(sorted(labels.items())))
            if key in seen:
                raise ValueError("duplicate series %r" % (key,))
            seen.add(key)
            if fam["type"] == "counter" and not value >= 0:
                raise ValueError("negative counter")
            if fam["type"] == "histogram" and name == fname:
                raise ValueError("histogram sample without _bucket/_sum/_count")
            if fam["type"] != "histogram" and "le" in labels:
                raise ValueError("le outside a histogram")
            fam["samples"].append((name, labels, value))
        except ValueError as e:
            raise ValueError("line %d: %s: %r" % (ln, e, line)) from None
    for fname, fam in families.items():
        if fam["type"] is None or fam["help"] is None:
            raise ValueError("%s lacks # TYPE or # HELP" % fname)
        if fam["type"] == "histogram":
            _check_histogram(fname, fam["samples"])
    return families


def _check_histogram(fname, samples):
    series = {}
    for name, labels, value in samples:
        base = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        s = series.setdefault(base, {"buckets": [], "sum": None, "count": None})
        if name.endswith("_bucket"):
            if "le" not in labels:
                raise ValueError("%s bucket without le" % fname)
            s["buckets"].append((_value(labels["le"]), value))
        elif name.endswith("_sum"):
            s["sum"] = value
        else:
            s["count"] = value
    for base, s in series.items():
        b = s["buckets"]
        if not b or b[-1][0] != math.inf:
            raise ValueError("%s%s: buckets do not end with +Inf" % (fname, base))
        if any(b[i][0] >= b[i + 1][0] or b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
            raise ValueError("%s%s: buckets not increasing or not cumulative" % (fname, base))
        if s["count"] is None or s["sum"] is None or s["count"] != b[-1][1]:
            raise ValueError("%s%s: _count missing or != the +Inf bucket" % (fname, base))


def value(families, name, **labels):
    """The value of one sample (None if absent)."""
    fname = _family_of(name, families)
    for n, l, v in families[fname]["samples"]:
        if n == name and all(l.get(k) == str(x) for k, x in labels.items()):
            return v
    return None


# ---------------------------------------------------------------- the test
BROKEN = [
    ("no newline at the end", "# HELP a x\n# TYPE a counter\na 1"),
    ("sample before TYPE", "a 1\n"),
    ("TYPE twice", "# HELP a x\n# TYPE a counter\n# TYPE a counter\na 1\n"),
    ("bad name", "# HELP 1a x\n# TYPE 1a counter\n"),
    ("bad escape", '# HELP a x\n# TYPE a counter\na{l="\\t"} 1\n'),
    ("unterminated", '# HELP a x\n# TYPE a counter\na{l="x} 1\n'),
    ("duplicate", "# HELP a x\n# TYPE a counter\na 1\na 2\n"),
    ("negative counter", "# HELP a x\n# TYPE a counter\na -1\n"),
    ("bad number", "# HELP a x\n# TYPE a gauge\na 1,5\n"),
    ("no +Inf", '# HELP h x\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n'),
    ("not cumulative", '# HELP h x\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n'),
    ("count mismatch", '# HELP h x\n# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n'),
    ("blank line", "# HELP a x\n# TYPE a gauge\n\na 1\n"),
    ("interleaved", "# HELP a x\n# TYPE a gauge\n# HELP b x\n# TYPE b gauge\na 1\n"),
]


def main():
    failed = 0
    for what, text in BROKEN:
        try:
            parse(text)
            print("FAIL the parser accepted: %s" % what)
            failed += 1
        except ValueError:
            print("ok   refused: %s" % what)
    with tempfile.TemporaryDirectory(prefix="ss-metrics-") as d:
        path = os.path.join(d, "sample.txt")
        subprocess.run([sys.argv[1], path], check=True, stdout=subprocess.DEVNULL)
        text = open(path).read()
        try:
            fams = parse(text)
            assert fams["s_total"]["help"] == "with \\ and\nnewline", fams["s_total"]["help"]
            assert value(fams, "s_total", servable='a"b', method="p\\q\nr") == 1e20
            assert value(fams, "s_total", servable="x", method="") == 0.1
            assert value(fams, "s:gauge") == -1.5e-9
            assert value(fams, "s_seconds_count", servable='a"b') == 50
            assert abs(value(fams, "s_seconds_sum", servable='a"b') - sum(i * 0.013 for i in range(50))) < 1e-9
            assert value(fams, "s_seconds_count", servable="x") == 0
            assert fams["s_empty_total"]["samples"] == []
            print("ok   the rendered sample parses and reads back")
        except (ValueError, AssertionError, KeyError) as e:
            print("FAIL the rendered sample: %s\n%s" % (e, text))
            failed += 1
    print("%d failed" % failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
