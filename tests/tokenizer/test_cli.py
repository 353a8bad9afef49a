"""shardserve tokenize on a small byte-level BPE tokenizer.json this test writes: encode, decode
(whole and --stream), stdin, and every kind of bad input getting exit status 1 and a message that
names it (2 for bad usage), never a crash.
    test_cli.py SHARDSERVE"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from byte_level import byte_chars  # noqa: E402

SHARDSERVE = sys.argv[1]
failures = []


def write_tokenizer(folder):
    chars = byte_chars()
    vocab = {chars[b]: b for b in range(256)}
    vocab["hi"] = 256
    vocab[chars[0xC3] + chars[0xA9]] = 257  # é
    tok = {
        "model": {"type": "BPE", "vocab": vocab, "merges": ["h i", chars[0xC3] + " " + chars[0xA9]]},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        "decoder": {"type": "ByteLevel"},
        "added_tokens": [{"id": 258, "content": "<s>", "special": True}],
    }
    path = os.path.join(folder, "tokenizer.json")
    with open(path, "w") as f:
        json.dump(tok, f)
    return path


def run(args, stdin=b""):
    p = subprocess.run([SHARDSERVE, "tokenize"] + args, input=stdin, capture_output=True, timeout=60)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def expect(name, got, want):
    if got != want:
        failures.append(f"{name}: got {got!r}, want {want!r}")


def expect_error(name, result, status, needle):
    rc, _, err = result
    if rc != status or needle not in err:
        failures.append(f"{name}: exit {rc}, stderr {err!r}; want exit {status} and {needle!r}")


with tempfile.TemporaryDirectory() as folder:
    tk = write_tokenizer(folder)
    # "hi" merges, " " then the é merge, <s> is the added token, "!" a byte
    expect("encode", run(["--tokenizer", tk, "hi \u00e9<s>!"]), (0, b"256 32 257 258 33\n", ""))
    expect("encode stdin", run(["--tokenizer", tk, "-"], "hi \u00e9".encode()), (0, b"256 32 257\n", ""))
    expect("decode", run(["--tokenizer", tk, "--decode", "256 32 257 258 33"]),
           (0, "hi \u00e9<s>!".encode(), ""))
    expect("decode skip", run(["--tokenizer", tk, "--decode", "--skip-special", "256,258,33"]),
           (0, b"hi!", ""))
    # é as two byte ids, streamed: held, then whole; a dangling lead byte ends as U+FFFD
    expect("stream", run(["--tokenizer", tk, "--decode", "--stream", "-"], b"104 195 169 226\n"),
           (0, "h\u00e9\ufffd".encode(), ""))
    expect_error("missing file", run(["--tokenizer", os.path.join(folder, "nope.json"), "x"]), 1,
                 "nope.json")
    bad = os.path.join(folder, "bad.json")
    with open(bad, "w") as f:
        f.write('{"model": {"type": "Unigram"}}')
    expect_error("unigram", run(["--tokenizer", bad, "x"]), 1, "model.type Unigram is not supported")
    expect_error("not utf-8", run(["--tokenizer", tk, "-"], b"ok\xff"), 1, "not valid UTF-8 at byte 2")
    expect_error("id range", run(["--tokenizer", tk, "--decode", "1 999"]), 1,
                 "token id 999 (at index 1) is not in the vocabulary")
    expect_error("id syntax", run(["--tokenizer", tk, "--decode", "1 x2"]), 1, "token id 1 ('x2')")
    expect_error("no text", run(["--tokenizer", tk]), 2, "needs --tokenizer FILE and TEXT")

for f in failures:
    print("FAIL", f)
print(f"{1 if not failures else 0} passed, {1 if failures else 0} failed")
sys.exit(1 if failures else 0)
