#!/usr/bin/python3
"""Generation over REST: Triton's generate extension (/v2/models/gen/generate and
/generate_stream, Server-Sent Events) and OpenAI's /v1/completions, served by a real
`shardserve serve` + `shardserve agents` over the tiny --kv-pool model (test_serve_generate.py).

- the tokens streamed event by event, concatenated, equal the last event's whole run, the
  non-streamed answer and PyTorch's greedy tokens (1 and 2 ranks);
- OpenAI completions with token ids and, with a small byte-level tokenizer.json this test writes
  into the servable folder, with text: streamed text == non-streamed text == the token ids
  decoded here; usage; stop strings end the text before them (streamed and not);
- a client that closes its event stream (or its plain request) after a few tokens frees its
  sequence: /metrics shows no running sequence and no KV block used right after another
  client's concurrent request completes unchanged, far before the closed one's max_tokens;
- bad JSON, unknown model, n=2, bad types, text without a tokenizer: 4xx naming the field;
  a tokenizer.json that does not load (a folder, JSON cut short): ids served, text refused naming why.

Usage: test_gen_rest.py CASE_DIR [case ...]"""

import http.client
import json
import os
import re
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "serving"))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tokenizer"))
from byte_level import byte_chars  # noqa: E402
from cluster import Cluster, run_cases  # noqa: E402
from test_serve_generate import CASE, PROMPT, REF, metric  # noqa: E402

PROMPT_IDS = [int(t) for t in PROMPT]
METHOD = {"name": "generate", "outputs": ["tokens", "finish_reason"],
          "inputs": ["prompt", "max_tokens", "temperature", "top_k", "top_p", "seed",
                     "presence_penalty", "frequency_penalty", "stop", "stop_token_ids"]}


# ---------------------------------------------------------------- a tokenizer for 128 ids
CHARS = byte_chars()
UNCHARS = {v: k for k, v in CHARS.items()}


def vocabulary():
    """Ids 0..127 (the tiny model's vocabulary, so text of these characters encodes within it):
    printable ASCII, space, newline, the two bytes of
    'é' alone (so a random model emits broken UTF-8 the stream must hold back or replace) and
    merges up to 128."""
    tokens = [chr(b) for b in range(0x21, 0x7F)] + [CHARS[0x20], CHARS[0x0A], CHARS[0xC3], CHARS[0xA9]]
    pairs = [("Ã", "©"), ("t", "h"), ("h", "e"), ("i", "n"), ("e", "r"), ("a", "n"), ("Ġ", "t"),
             ("Ġ", "a"), ("o", "n"), ("r", "e"), ("e", "s"), ("o", "r"), ("Ġ", "s"), ("e", "n"),
             ("a", "t"), ("Ġ", "w"), ("t", "o"), ("n", "d"), ("Ġ", "o"), ("i", "s"), ("o", "u"),
             ("e", "d"), ("Ġ", "b"), ("Ġ", "c"), ("a", "r"), ("Ġ", "f"), ("Ġ", "h"), ("l", "l"), ("s", "t"), ("l", "e")]
    merges = []
    for a, b in pairs:
        if len(tokens) == BOS:
            break
        tokens.append(a + b)
        merges.append(a + " " + b)
    tokens.append("<s>")  # id 127: an added special token, Llama's BOS when the template adds it
    # a byte-level vocabulary has every byte: the rest get ids the model never emits
    tokens += [CHARS[b] for b in range(256) if CHARS[b] not in tokens]
    return {t: i for i, t in enumerate(tokens)}, merges


BOS = 127
VOCAB, MERGES = vocabulary()
BY_ID = {i: t for t, i in VOCAB.items()}


def write_tokenizer(folder, bos=False):
    """GPT-2 style; bos: Llama-3 style, the post-processor puts <s> in front of every prompt."""
    vocab = {t: i for t, i in VOCAB.items() if i != BOS}
    tok = {"model": {"type": "BPE", "vocab": vocab, "merges": MERGES},
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
           "decoder": {"type": "ByteLevel"},
           "added_tokens": [{"id": BOS, "content": "<s>", "special": True}]}
    if bos:
        tok["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS], "tokens": ["<s>"]}}}
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(tok, f)


def decode(ids):
    """Byte-level decode skipping special tokens, invalid UTF-8 replaced as Hugging Face does."""
    return bytes(UNCHARS[c] for i in ids if i != BOS for c in BY_ID[i]).decode("utf-8", "replace")


# ---------------------------------------------------------------- serving and HTTP
def serve(c, ranks=1, tokenizer=False, gen=None, bos=False, method=None):
    models = c.add_servable("gen", os.path.join(CASE, "model.onnx"), ranks, methods=[method or METHOD],
                            extra={"generate": gen or {"max_running": 32, "max_context": 256}},
                            shard_args=("--kv-pool",))
    if tokenizer == "folder":  # a folder by that name: not readable as a file, even by root
        os.makedirs(os.path.join(c.servables, "gen", "tokenizer.json"))
    elif tokenizer == "malformed":
        with open(os.path.join(c.servables, "gen", "tokenizer.json"), "w") as f:
            f.write('{"model": {"type": "BPE", "vocab": {"a": 0')
    elif tokenizer:
        write_tokenizer(os.path.join(c.servables, "gen"), bos)
    c.serve([("gen", 1, c.write_rank_table(ranks))])
    c.agents(c.worker_addresses["gen"][0], models)
    c.wait_ready(1)


def post(c, path, body, timeout=120):
    """(status, parsed JSON) of a POST; body: a dict, or bytes sent as they are."""
    host, port = c.rest.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, data, {"Content-Type": "application/json"})
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        raise AssertionError("%s answered %d with a body that is not JSON: %r" % (path, r.status, raw[:300]))


def open_stream(c, path, body, timeout=120):
    host, port = c.rest.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200, (r.status, r.read()[:300])
    assert r.getheader("Content-Type") == "text/event-stream", r.getheaders()
    return conn, r


def events(r):
    """The data of each event until the stream ends ("[DONE]" kept as a string)."""
    while True:
        line = r.readline()
        if not line:
            return
        line = line.decode().rstrip("\n")
        if not line:
            continue
        assert line.startswith("data: "), line
        data = line[6:]
        yield data if data == "[DONE]" else json.loads(data)


def stream(c, path, body):
    conn, r = open_stream(c, path, body)
    try:
        return list(events(r))
    finally:
        conn.close()


def greedy(n, **extra):
    return dict({"prompt": PROMPT_IDS, "max_tokens": n, "temperature": 0}, **extra)


# ---------------------------------------------------------------- cases
def triton_stream_equals_pytorch(ranks):
    with Cluster() as c:
        serve(c, ranks)
        n = len(REF)
        status, whole = post(c, "/v2/models/gen/generate", greedy(n))
        assert status == 200, whole
        assert whole["tokens"] == list(REF), (whole, list(REF))
        assert whole["finish_reason"] == "length" and whole["model_name"] == "gen", whole
        evs = stream(c, "/v2/models/gen/versions/1/generate_stream", greedy(n))
        streamed = [t for e in evs for t in e["tokens"]]
        assert streamed == list(REF), (streamed, list(REF))
        assert len(evs) >= n // 2, "%d events for %d tokens: not streamed" % (len(evs), n)
        assert evs[-1]["finish_reason"] == "length" and all("finish_reason" not in e for e in evs[:-1]), evs[-2:]
        status, oa = post(c, "/v1/completions", {"model": "gen", "prompt": PROMPT_IDS, "max_tokens": n,
                                                 "temperature": 0})
        assert status == 200 and oa["choices"][0]["token_ids"] == list(REF), oa
        assert oa["usage"] == {"prompt_tokens": len(PROMPT_IDS), "completion_tokens": n,
                               "total_tokens": len(PROMPT_IDS) + n}, oa["usage"]
        print("    %d rank(s): %d greedy tokens equal PyTorch's in generate, %d streamed events "
              "and /v1/completions" % (ranks, n, len(evs)))


def test_triton_stream_whole():
    triton_stream_equals_pytorch(1)


def test_triton_stream_two_ranks():
    triton_stream_equals_pytorch(2)


def openai_stream(c, body):
    """(text, token ids, finish_reason, usage) of a streamed completion."""
    evs = stream(c, "/v1/completions", dict(body, stream=True))
    assert evs[-1] == "[DONE]", evs[-3:]
    chunks = evs[:-1]
    assert all(e["object"] == "text_completion" and e["model"] == "gen" for e in chunks), chunks[0]
    text = "".join(e["choices"][0]["text"] for e in chunks)
    ids = [t for e in chunks for t in e["choices"][0]["token_ids"]]
    assert all(e["choices"][0]["finish_reason"] is None for e in chunks[:-1]), chunks[-2]
    return text, ids, chunks[-1]["choices"][0]["finish_reason"], chunks[-1].get("usage"), len(chunks)


def test_openai_text_and_ids():
    with Cluster() as c:
        serve(c, 1, tokenizer=True)
        conn = http.client.HTTPConnection(*c.rest.rsplit(":", 1), timeout=30)
        conn.request("GET", "/v1/models")
        r = conn.getresponse()
        models = json.loads(r.read())
        assert r.status == 200 and [m["id"] for m in models["data"]] == ["gen"], models
        prompt = "the answer is"
        body = {"model": "gen", "prompt": prompt, "max_tokens": 40, "temperature": 0}
        status, whole = post(c, "/v1/completions", body)
        assert status == 200, whole
        ch = whole["choices"][0]
        assert ch["text"] == decode(ch["token_ids"]) and len(ch["token_ids"]) == 40, ch
        assert ch["finish_reason"] == "length", ch
        # BPE by merge rank: "the" -> th e, " answer" -> Ġ an s w er (er before an), " is" -> Ġ is
        encoded = [VOCAB[t] for t in ("th", "e", "Ġ", "an", "s", "w", "er", "Ġ", "is")]
        assert whole["usage"]["prompt_tokens"] == len(encoded), whole["usage"]
        text, ids, reason, usage, n_chunks = openai_stream(c, body)
        assert ids == ch["token_ids"] and text == ch["text"] and reason == "length", (text, ch["text"])
        assert usage == whole["usage"], (usage, whole["usage"])
        # the same prompt as ids: the same tokens
        status, by_ids = post(c, "/v1/completions", dict(body, prompt=encoded))
        assert by_ids["choices"][0]["token_ids"] == ch["token_ids"], (by_ids, ch)
        # sampled, seeded: streamed == not streamed
        sampled = dict(body, temperature=1.5, top_p=0.95, seed=3, presence_penalty=0.5,
                       frequency_penalty=0.3, max_tokens=60)
        status, s_whole = post(c, "/v1/completions", sampled)
        assert status == 200, s_whole
        s_text, s_ids, _, _, _ = openai_stream(c, sampled)
        # seed 3 samples a lone UTF-8 lead byte (0xC3): held back, then U+FFFD like decode's
        assert VOCAB[CHARS[0xC3]] in s_ids and s_text == decode(s_ids), (s_ids, s_text)
        assert s_ids == s_whole["choices"][0]["token_ids"] and s_text == s_whole["choices"][0]["text"], (s_text, s_whole)
        print("    text prompt of 9 tokens: 40 tokens, %d chunks, streamed text == whole == decoded "
              "ids (%r...); a sampled seeded run with a lone UTF-8 lead byte equal streamed and not" % (n_chunks, text[:20]))
        # stop strings: the output ends before the first one
        cut = ch["text"][12:15]
        want = ch["text"][:ch["text"].index(cut)]
        status, stopped = post(c, "/v1/completions", dict(body, stop=[cut, "\x00never"]))
        assert status == 200 and stopped["choices"][0]["text"] == want, (cut, stopped, want)
        assert stopped["choices"][0]["finish_reason"] == "stop", stopped
        # ended at the stop string, not run to max_tokens and cut
        assert stopped["usage"]["completion_tokens"] < 40, stopped["usage"]
        st_text, _, st_reason, _, _ = openai_stream(c, dict(body, stop=cut))
        assert st_text == want and st_reason == "stop", (st_text, want, st_reason)
        print("    stop %r: %d characters, finish_reason stop (streamed and not), the plain one "
              "ended after %d of 40 tokens" % (cut, len(want), stopped["usage"]["completion_tokens"]))


def test_openai_llama_bos():
    """Text is encoded with the post-processor's special tokens (Hugging Face's and vLLM's
    add_special_tokens=True): a Llama-3 style tokenizer.json puts its BOS in front; the GPT-2
    style one (test_openai_text_and_ids) adds nothing."""
    with Cluster() as c:
        serve(c, 1, tokenizer=True, bos=True)
        body = {"model": "gen", "prompt": "the answer is", "max_tokens": 20, "temperature": 0}
        status, whole = post(c, "/v1/completions", body)
        assert status == 200 and whole["usage"]["prompt_tokens"] == 10, whole
        encoded = [BOS] + [VOCAB[t] for t in ("th", "e", "Ġ", "an", "s", "w", "er", "Ġ", "is")]
        status, by_ids = post(c, "/v2/models/gen/generate", {"prompt": encoded, "max_tokens": 20,
                                                            "temperature": 0})
        assert by_ids["tokens"] == whole["choices"][0]["token_ids"], (by_ids, whole)
        assert by_ids["text_output"] == whole["choices"][0]["text"] == decode(by_ids["tokens"]), by_ids
        print("    BOS + 9 tokens, the same answer as the ids [%d, ...]" % BOS)


def test_openai_ids_without_tokenizer():
    with Cluster() as c:
        serve(c, 1)
        body = {"model": "gen", "prompt": PROMPT_IDS, "max_tokens": 12, "temperature": 0}
        status, whole = post(c, "/v1/completions", body)
        assert status == 200 and whole["choices"][0]["token_ids"] == list(REF[:12]), whole
        assert whole["choices"][0]["text"] == "", whole
        text, ids, reason, usage, _ = openai_stream(c, body)
        assert ids == list(REF[:12]) and text == "" and reason == "length", (ids, text)
        assert usage["completion_tokens"] == 12, usage
        status, err = post(c, "/v1/completions", dict(body, prompt="hello"))
        assert status == 400 and err["error"]["param"] == "prompt" and "tokenizer.json" in err["error"]["message"], err
        status, err = post(c, "/v2/models/gen/generate", {"text_input": "hello", "max_tokens": 3})
        assert status == 400 and "tokenizer.json" in err["error"], err
        print("    ids in, ids out; text refused: %s" % err["error"][:90])


def test_unusable_tokenizer():
    """A tokenizer.json that does not load (a folder by that name, then JSON cut short): serve
    starts, ids prompts are answered, and text is refused naming the file and why it failed."""
    for kind, why in (("folder", "not a regular file"), ("malformed", "not valid json")):
        with Cluster() as c:
            serve(c, 1, tokenizer=kind)
            body = {"model": "gen", "prompt": PROMPT_IDS, "max_tokens": 8, "temperature": 0}
            status, whole = post(c, "/v1/completions", body)
            assert status == 200 and whole["choices"][0]["token_ids"] == list(REF[:8]), (kind, whole)
            status, err = post(c, "/v1/completions", dict(body, prompt="hello"))
            msg = err["error"]["message"] if status == 400 else err
            assert status == 400 and "tokenizer.json" in msg and why in msg.lower(), (kind, status, err)
            status, err2 = post(c, "/v2/models/gen/generate", {"text_input": "hello", "max_tokens": 3})
            assert status == 400 and why in err2["error"].lower(), (kind, status, err2)
            status, err3 = post(c, "/v1/completions", dict(body, stop=["a"]))  # ids, stop strings
            msg3 = err3["error"]["message"] if status == 400 else err3
            assert status == 400 and why in msg3.lower(), (kind, status, err3)
            status, again = post(c, "/v1/completions", body)  # the servable still serves
            assert status == 200 and again["choices"][0]["token_ids"] == list(REF[:8]), (kind, again)
            print("    %s: ids served; text refused: %s" % (kind, msg))


def wait_metric(c, name, want, timeout, **labels):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metric(c, name, **labels) == want:
            return True
        time.sleep(0.02)
    return False


def hang_up_frees_sequence(streamed):
    """B (64 greedy tokens) runs while A (240) is opened and closed after its first tokens. The
    sequence-steps of every model call (shardserve_batch_size_sum: one per sequence per step)
    show how far A got; without the cancel it runs all 240."""
    with Cluster() as c:
        serve(c, 1)
        other = {}
        steps_before = metric(c, "shardserve_batch_size_sum")

        def run_other():
            other["status"], other["reply"] = post(c, "/v2/models/gen/generate", greedy(len(REF)))
        t = threading.Thread(target=run_other)
        t.start()
        long = greedy(240)
        if streamed:
            conn, r = open_stream(c, "/v2/models/gen/generate_stream", long)
            got = events(r)
            first = [t for _ in range(3) for t in next(got)["tokens"]]
            assert first == list(REF[:len(first)]), first
        else:
            host, port = c.rest.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.request("POST", "/v2/models/gen/generate", json.dumps(long).encode(),
                         {"Content-Type": "application/json"})
            time.sleep(0.003)  # received and running: its 240 steps take about 15 ms here
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        t.join(120)
        assert other["status"] == 200 and other["reply"]["tokens"] == list(REF), other
        assert wait_metric(c, "shardserve_sequences", 0, 10, state="running"), "still running"
        running = metric(c, "shardserve_sequences", state="running")
        used = metric(c, "shardserve_kv_blocks", state="used")
        a_steps = metric(c, "shardserve_batch_size_sum") - steps_before - len(REF)
        assert running == 0 and used == 0, (running, used)
        assert 1 <= a_steps < 120, "the closed request ran %d of its 240 tokens" % a_steps
        print("    %s request closed after its first tokens: it ran %d of 240 token steps; the "
              "other's 64 tokens unchanged; running %d, KV blocks used %d" % (
                  "streamed" if streamed else "plain", a_steps, running, used))


def test_stream_hang_up_frees_sequence():
    hang_up_frees_sequence(True)


def test_plain_hang_up_frees_sequence():
    hang_up_frees_sequence(False)


def test_bad_requests_named():
    with Cluster() as c:
        serve(c, 1)
        ok = {"model": "gen", "prompt": PROMPT_IDS, "max_tokens": 4}
        cases = [("/v1/completions", b"{not json", 400, None, "JSON"),
                 ("/v1/completions", dict(ok, model="nope"), 404, "model", "nope"),
                 ("/v1/completions", dict(ok, n=2), 400, "n", "'n'"),
                 ("/v1/completions", dict(ok, max_tokens="4"), 400, "max_tokens", "max_tokens"),
                 ("/v1/completions", dict(ok, temperature=[1]), 400, "temperature", "temperature"),
                 ("/v1/completions", dict(ok, max_tokens=4.5), 400, "max_tokens", "integer"),
                 ("/v1/completions", dict(ok, prompt=[1, "a"]), 400, "prompt", "element 1"),
                 ("/v1/completions", dict(ok, prompt=[[1], [2]]), 400, "prompt", "2 prompts"),
                 ("/v1/completions", dict(ok, stream="yes"), 400, "stream", "stream"),
                 ("/v1/completions", dict(ok, stop=7), 400, "stop", "stop"),
                 ("/v1/completions", dict(ok, min_p=0.5), 400, "min_p", "does not take"),
                 ("/v1/completions", dict(ok, prompt=[]), 400, "prompt", "non-empty"),
                 ("/v1/completions", dict(ok, max_tokens=10 ** 6), 400, "prompt", "max_context"),
                 ("/v1/completions", dict(ok, prompt=[1, 5000]), 400, "prompt", "vocabulary"),
                 ("/v1/completions", dict(ok, temperature=-1), 400, "temperature", "temperature"),
                 ("/v1/completions", dict(ok, max_tokens=1e20), 400, "max_tokens", "beyond"),
                 ("/v1/completions", dict(ok, seed=1e19), 400, "seed", "beyond"),
                 ("/v1/completions", dict(ok, stop_token_ids=[-5]), 400, "stop_token_ids", "element 0"),
                 ("/v1/completions", dict(ok, stop_token_ids=[1, 1e30]), 400, "stop_token_ids",
                  "element 1"),
                 ("/v1/completions", {"prompt": [1]}, 400, "model", "model")]
        for path, body, status, param, word in cases:
            got, err = post(c, path, body)
            assert got == status and "error" in err, (body, got, err)
            e = err["error"]
            assert param is None or e["param"] == param, (body, e)
            assert word in e["message"], (word, e)
        got, err = post(c, "/v1/completions", dict(ok, model="nope"))
        assert err["error"]["code"] == "model_not_found", err
        got, err = post(c, "/v2/models/nope/generate", {"prompt": [1]})
        assert got == 404 and "nope" in err["error"], err
        got, err = post(c, "/v2/models/gen/generate", {"prompt": [1], "top_k": "x"})
        assert got == 400 and "top_k" in err["error"], err
        # "stop" inside "parameters" is read (here: refused, the servable has no tokenizer)
        got, err = post(c, "/v2/models/gen/generate", {"prompt": [1], "parameters": {"stop": "x"}})
        assert got == 400 and "tokenizer" in err["error"], err
        # a streamed request refused by the worker gets a plain error, not an event stream
        got, err = post(c, "/v2/models/gen/generate_stream", {"prompt": [1], "max_tokens": 10 ** 6})
        assert got == 400 and "max_context" in err["error"], err
        conn = http.client.HTTPConnection(*c.rest.rsplit(":", 1), timeout=30)
        conn.request("GET", "/v1/nothing")
        r = conn.getresponse()
        assert r.status == 404 and "error" in json.loads(r.read()), r.status
        print("    %d bad requests refused with 4xx naming the field" % (len(cases) + 5))


def test_refused_prompt_fails_only_itself():
    """Without max_context, a prompt past the model's position table (256) fails in the model.
    A stream decoding in the same call keeps going and equals PyTorch's tokens: the failed call
    runs again one sequence at a time, and only the long prompt fails (both used to)."""
    with Cluster() as c:
        serve(c, 1, gen={"max_running": 32})
        conn, r = open_stream(c, "/v2/models/gen/generate_stream", greedy(len(REF)))
        try:
            evs = events(r)
            first = next(evs)
            got, err = post(c, "/v2/models/gen/generate", {"prompt": [5] * 300, "max_tokens": 4})
            assert got >= 400 and "out of range" in err["error"], (got, err)
            streamed = first["tokens"] + [t for e in evs for t in e.get("tokens", [])]
        finally:
            conn.close()
        assert streamed == list(REF), (streamed, list(REF))
        print("    a 300-token prompt failed alone; the stream beside it gave its %d tokens" % len(REF))


def test_finish_reason_without_the_output():
    """A method without the finish_reason output: REST still reports why a sequence ended (a stop
    token said "length" before: the answer had no reason to read)."""
    with Cluster() as c:
        serve(c, 1, method={"name": "generate", "inputs": ["prompt", "max_tokens", "temperature",
                                                           "stop_token_ids"], "outputs": ["tokens"]})
        stop = REF[5]
        status, whole = post(c, "/v2/models/gen/generate", greedy(len(REF), stop_token_ids=[int(stop)]))
        first = list(REF).index(stop)
        assert status == 200 and whole["tokens"] == list(REF[:first + 1]), whole
        assert whole["finish_reason"] == "stop", whole
        status, oa = post(c, "/v1/completions", {"model": "gen", "prompt": PROMPT_IDS, "max_tokens": 3,
                                                 "temperature": 0})
        assert status == 200 and oa["choices"][0]["finish_reason"] == "length", oa
        evs = stream(c, "/v2/models/gen/generate_stream", greedy(len(REF), stop_token_ids=[int(stop)]))
        assert evs[-1]["finish_reason"] == "stop", evs[-2:]


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_unknown_models_and_a_full_servable():
    """Model names a client makes up cost nothing that stays (404s, serve's memory flat), and a
    servable at generate.max_sequences answers 503 naming it (it is busy, the request is fine)."""
    # under AddressSanitizer freed blocks wait in a quarantine (256 MB) before reuse, which
    # would count as growth here: serve of this case runs without one
    asan = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "quarantine_size_mb=0"
    try:
        unknown_models_and_a_full_servable()
    finally:
        if asan is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = asan


def unknown_models_and_a_full_servable():
    with Cluster() as c:
        serve(c, 1, gen={"max_running": 1, "max_sequences": 1, "max_context": 256})
        post(c, "/v1/completions", {"model": "warm-up", "prompt": [1]})
        before = rss_kb(c.server.pid)
        for i in range(40):
            got, err = post(c, "/v1/completions",
                            {"model": "m%d-" % i + "x" * (1 << 20), "prompt": [1], "max_tokens": 1})
            assert got == 404, (got, str(err)[:200])
        grew = (rss_kb(c.server.pid) - before) / 1024
        assert grew < 16, "serve grew by %.1f MB over 40 requests for unknown models" % grew
        conn, r = open_stream(c, "/v2/models/gen/generate_stream", greedy(200))
        try:
            first = next(events(r))
            assert "tokens" in first or "text_output" in first, first
            got, err = post(c, "/v2/models/gen/generate", greedy(4))
            assert got == 503 and "max_sequences" in err["error"], (got, err)
        finally:
            conn.close()
        print("    40 unknown models: serve grew %.1f MB; a full servable answers 503" % grew)


CASES = [test_triton_stream_whole, test_triton_stream_two_ranks, test_openai_text_and_ids,
         test_openai_llama_bos,
         test_openai_ids_without_tokenizer, test_unusable_tokenizer,
         test_stream_hang_up_frees_sequence,
         test_plain_hang_up_frees_sequence, test_bad_requests_named,
         test_unknown_models_and_a_full_servable, test_refused_prompt_fails_only_itself,
         test_finish_reason_without_the_output]

if __name__ == "__main__":
    sys.exit(run_cases(CASES, sys.argv[2:]))
