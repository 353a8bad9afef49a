#!/usr/bin/python3
"""Stop strings in the worker's token loop, the same through every front end: the tiny GPT-2
(--kv-pool) served as a generative servable whose method takes input "stop" and gives output
"text", with a byte-level tokenizer.json (test_gen_rest.py's) in its servable folder.

The stop string is taken from the text of PyTorch's greedy tokens (ref_tokens.npy) decoded here,
and the expected answer cut by hand from them: the text ends before the stop string's first
occurrence; the tokens are PyTorch's up to and including the one that completed it (vLLM's rule,
which this test prefers to exercise with a stop string that starts and ends inside tokens).

- MindSpore gRPC Predict and PredictStream, KServe ModelInfer and ModelStreamInfer, Triton's REST
  generate and generate_stream, OpenAI /v1/completions (plain and streamed): tokens, text and
  finish_reason "stop" as expected; streamed pieces add up to it, no piece before the last
  carries a token whose text overlaps the stop string, and no text past it is ever sent;
- a stop string that never appears runs to max_tokens (all of PyTorch's tokens, "length");
- bad "stop" values are refused naming it: not strings, more than 4 (SS_GEN_MAX_STOPS), longer
  than 256 bytes (SS_GEN_MAX_STOP_BYTES), and any stop string when the servable has no
  tokenizer.json.

Usage: test_gen_stop.py CASE_DIR [case ...]"""

import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_gen_rest as rest  # noqa: E402
import test_gen_stream as gs  # noqa: E402
from test_serve_generate import CASE, PROMPT, REF, Cluster, run_cases, ssc  # noqa: E402
import grpc_service_pb2 as kpb  # noqa: E402

METHOD = {"name": "generate", "outputs": ["tokens", "finish_reason", "text"],
          "inputs": ["prompt", "max_tokens", "temperature", "stop"]}
N = len(REF)
PROMPT_IDS = [int(t) for t in PROMPT]


# ---------------------------------------------------------------- the expected cut, by hand
def token_bytes(t):
    return b"" if t == rest.BOS else bytes(rest.UNCHARS[c] for c in rest.BY_ID[int(t)])


def pick_stop():
    """A 3-byte printable stop string from the reference text at its first occurrence, after
    plain ASCII only; preferring one that starts and ends inside tokens. Returns (stop, text
    before it, tokens kept, index of the first token overlapping it)."""
    pieces = [token_bytes(t) for t in REF]
    ends = list(np.cumsum([len(p) for p in pieces]))
    data = b"".join(pieces)
    bounds = set([0] + ends)
    best = None
    for p in range(4, len(data) - 3):
        w = data[p:p + 3]
        if not all(0x20 <= b < 0x7F for b in data[:p + 3]):
            break
        if data.find(w) != p:
            continue
        j = next(i for i, e in enumerate(ends) if e >= p + 3)
        if j + 1 >= N:
            break
        score = (p not in bounds) + (p + 3 not in bounds)
        if best is None or score > best[0]:
            best = (score, p, w, j)
    assert best, "no ASCII stop string in the reference text %r" % data[:40]
    score, p, w, j = best
    first = next(i for i, e in enumerate(ends) if e > p)
    return w.decode(), data[:p].decode(), [int(t) for t in REF[:j + 1]], first, score


STOP, WANT_TEXT, WANT_TOKENS, FIRST_HELD, INSIDE = pick_stop()
FULL_TEXT = rest.decode(REF)
NEVER = next(s for s in ("QQZ", "ZQZQ", "}}}}{") if s not in FULL_TEXT)


def serve(c, tokenizer=True):
    models = c.add_servable("gen", os.path.join(CASE, "model.onnx"), 1, methods=[METHOD],
                            extra={"generate": {"max_running": 32, "max_context": 256}},
                            shard_args=("--kv-pool",))
    if tokenizer:
        rest.write_tokenizer(os.path.join(c.servables, "gen"))
    c.serve([("gen", 1, c.write_rank_table(1))])
    c.agents(c.worker_addresses["gen"][0], models)
    c.wait_ready(1)


def inst(stop):
    return {"prompt": np.asarray(PROMPT, np.int64), "max_tokens": np.int64(N),
            "temperature": np.float32(0), "stop": stop}


def check_answer(what, tokens, text, reason, want_tokens=WANT_TOKENS, want_text=WANT_TEXT,
                 want_reason="stop"):
    tokens = [int(t) for t in tokens]
    assert tokens == want_tokens, "%s: tokens %s, want %s" % (what, tokens, want_tokens)
    assert text == want_text, "%s: text %r, want %r" % (what, text, want_text)
    assert reason in (want_reason, want_reason.encode()), "%s: finish_reason %r" % (what, reason)


def check_pieces(what, pieces, final_tokens, final_text):
    """pieces: (tokens, text) in order. They add up to the answer; text never passes the stop;
    no piece but the last carries a token whose text overlaps the stop string."""
    sent = ""
    for k, (tokens, text) in enumerate(pieces):
        sent += text
        assert WANT_TEXT.startswith(sent), "%s: piece %d sent %r past the stop" % (what, k, sent)
    streamed = [int(t) for tokens, _ in pieces for t in tokens]
    assert streamed == [int(t) for t in final_tokens], (what, streamed, list(final_tokens))
    assert sent == final_text, (what, sent, final_text)
    before_last = sum(len(tokens) for tokens, _ in pieces[:-1])
    assert before_last <= FIRST_HELD, "%s: %d tokens streamed before the last piece, but token " \
        "%d already overlaps the stop string %r" % (what, before_last, FIRST_HELD, STOP)
    assert len(pieces) >= 2, "%s: %d piece(s): not streamed" % (what, len(pieces))


def kserve_request(value):
    """gs.kserve_request plus "stop" as a BYTES input (length-prefixed) or a non-string."""
    req = gs.kserve_request({k: v for k, v in inst(None).items() if k != "stop"})
    if isinstance(value, str):
        raw = value.encode()
        req.inputs.add(name="stop", datatype="BYTES", shape=[1])
        req.raw_input_contents.append(struct.pack("<I", len(raw)) + raw)
    else:
        req.inputs.add(name="stop", datatype="INT64", shape=[1])
        req.raw_input_contents.append(np.asarray([value], np.int64).tobytes())
    return req


def kserve_output(resp, name):
    names = [o.name for o in resp.outputs]
    raw = resp.raw_output_contents[names.index(name)]
    if resp.outputs[names.index(name)].datatype != "BYTES":
        return list(np.frombuffer(raw, np.int64))
    n = struct.unpack("<I", raw[:4])[0]
    return raw[4:4 + n].decode()


# ---------------------------------------------------------------- cases
def test_grpc_stops():
    with Cluster() as c:
        serve(c)
        r = ssc.Client(c.grpc, "gen", "generate").infer([inst(STOP)])[0]
        assert "error" not in r, r
        check_answer("Predict", r["tokens"], r["text"], r["finish_reason"])
        msgs = gs.ms_stream(c, inst(STOP))
        final = msgs[-1][0]
        check_answer("PredictStream", final["tokens"], final["text"], final["finish_reason"])
        check_pieces("PredictStream", [(list(m[0]["tokens"]), m[0]["text"]) for m in msgs[:-1]],
                     final["tokens"], final["text"])
        ch = gs.channel(c)
        resp = ch.unary_unary(gs.KINFER, request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=kpb.ModelInferResponse.FromString)(
            kserve_request(STOP), timeout=120)
        ch.close()
        check_answer("ModelInfer", kserve_output(resp, "tokens"), kserve_output(resp, "text"),
                     kserve_output(resp, "finish_reason"))
        ch = gs.channel(c)
        call = ch.stream_stream(gs.KSTREAM, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=kpb.ModelStreamInferResponse.FromString)
        resps = [x.infer_response for x in call(iter([kserve_request(STOP)]), timeout=120)]
        ch.close()
        last = resps[-1]
        check_answer("ModelStreamInfer", kserve_output(last, "tokens"),
                     kserve_output(last, "text"), kserve_output(last, "finish_reason"))
        check_pieces("ModelStreamInfer",
                     [(kserve_output(x, "tokens"), kserve_output(x, "text")) for x in resps[:-1]],
                     kserve_output(last, "tokens"), kserve_output(last, "text"))
        r = ssc.Client(c.grpc, "gen", "generate").infer([inst(NEVER)])[0]
        check_answer("Predict, stop %r never appears" % NEVER, r["tokens"], r["text"],
                     r["finish_reason"], [int(t) for t in REF], FULL_TEXT, "length")
        r = ssc.Client(c.grpc, "gen", "generate").infer([inst("")])[0]
        check_answer("Predict, no stop", r["tokens"], r["text"], r["finish_reason"],
                     [int(t) for t in REF], FULL_TEXT, "length")
        print("    stop %r (%d of its 2 ends inside a token): %d of %d tokens (the one completing "
              "it included), %d characters, "
              "over Predict, PredictStream (%d pieces), ModelInfer, ModelStreamInfer (%d pieces); "
              "%r never appears: all %d" % (STOP, INSIDE, len(WANT_TOKENS), N, len(WANT_TEXT),
                                            len(msgs) - 1, len(resps) - 1, NEVER, N))


def test_rest_stops():
    with Cluster() as c:
        serve(c)
        body = {"prompt": PROMPT_IDS, "max_tokens": N, "temperature": 0, "stop": STOP}
        status, whole = rest.post(c, "/v2/models/gen/generate", body)
        assert status == 200, whole
        check_answer("generate", whole["tokens"], whole["text_output"], whole["finish_reason"])
        evs = rest.stream(c, "/v2/models/gen/generate_stream", body)
        assert evs[-1]["finish_reason"] == "stop", evs[-1]
        pieces = [(e["tokens"], e["text_output"]) for e in evs]
        check_pieces("generate_stream", [p for p in pieces if p[0] or p[1]], WANT_TOKENS,
                     WANT_TEXT)
        oa = {"model": "gen", "prompt": PROMPT_IDS, "max_tokens": N, "temperature": 0,
              "stop": [STOP, NEVER]}
        status, whole = rest.post(c, "/v1/completions", oa)
        assert status == 200, whole
        ch = whole["choices"][0]
        check_answer("completions", ch["token_ids"], ch["text"], ch["finish_reason"])
        assert whole["usage"]["completion_tokens"] == len(WANT_TOKENS), whole["usage"]
        evs = rest.stream(c, "/v1/completions", dict(oa, stream=True))
        assert evs[-1] == "[DONE]", evs[-2:]
        chunks = [e["choices"][0] for e in evs[:-1]]
        assert chunks[-1]["finish_reason"] == "stop", chunks[-1]
        check_pieces("completions stream", [(x["token_ids"], x["text"]) for x in chunks
                                            if x["token_ids"] or x["text"]],
                     WANT_TOKENS, WANT_TEXT)
        status, whole = rest.post(c, "/v1/completions", dict(oa, stop=NEVER))
        ch = whole["choices"][0]
        check_answer("completions, stop never appears", ch["token_ids"], ch["text"],
                     ch["finish_reason"], [int(t) for t in REF], FULL_TEXT, "length")
        print("    stop %r over Triton's generate (+_stream, %d events) and OpenAI's completions "
              "(plain and streamed): %d tokens, text %r" % (STOP, len(evs), len(WANT_TOKENS),
                                                             WANT_TEXT[-12:]))


def error_of(r):
    one = r if isinstance(r, dict) else r[0]
    return str(one.get("error", ""))


def test_bad_stops_named():
    with Cluster() as c:
        serve(c)
        client = ssc.Client(c.grpc, "gen", "generate")
        cases = [(np.int64(5), "kMSI_String"),  # MindSpore's own check, before the worker's
                 ("a\x00b\x00c\x00d\x00e", "more than 4 stop strings (SS_GEN_MAX_STOPS)"),
                 ("x" * 257, "257 bytes, at most 256 (SS_GEN_MAX_STOP_BYTES)")]
        for value, words in cases:
            err = error_of(client.infer([inst(value)]))
            assert ("'stop'" in err or "input 3" in err) and words in err, (value if not isinstance(value, str)
                                                      else value[:20], err)
        ch = gs.channel(c)
        try:
            ch.unary_unary(gs.KINFER, request_serializer=lambda m: m.SerializeToString(),
                           response_deserializer=kpb.ModelInferResponse.FromString)(
                kserve_request(7), timeout=60)
            raise AssertionError("KServe took an INT64 'stop'")
        except gs.grpc.RpcError as e:
            assert "'stop'" in e.details() and "BYTES" in e.details(), e.details()
        ch.close()
        ok = {"model": "gen", "prompt": PROMPT_IDS, "max_tokens": 4}
        for stop, param, words in [(7, "stop", "at most 4"), (["a"] * 5, "stop", "at most 4"),
                                   ([1], "stop", "strings only"),
                                   ("y" * 300, None, "SS_GEN_MAX_STOP_BYTES")]:
            status, err = rest.post(c, "/v1/completions", dict(ok, stop=stop))
            assert status == 400 and words in err["error"]["message"], (stop, status, err)
            assert param is None or err["error"]["param"] == param, err
            assert "stop" in err["error"]["message"], err
        status, err = rest.post(c, "/v2/models/gen/generate", {"prompt": [1], "stop": {"a": 1}})
        assert status == 400 and "stop" in err["error"], err
        # a text prompt past max_context (256) is refused once its 256th id is made, by the front
        # end (the worker's refusal would count all of them)
        status, err = rest.post(c, "/v1/completions", dict(ok, prompt="a b " * 50000))
        assert status == 400 and err["error"]["param"] == "prompt", err
        assert "more than 255 tokens" in err["error"]["message"], err
        assert "max_context 256" in err["error"]["message"], err
        # the worker still runs: a good request after the bad ones
        r = client.infer([inst(STOP)])[0]
        check_answer("Predict after bad stops", r["tokens"], r["text"], r["finish_reason"])
        print("    refused: %s" % "; ".join(error_of(client.infer([inst(v)]))[:70]
                                            for v, _ in cases))
    with Cluster() as c:
        serve(c, tokenizer=False)
        err = error_of(ssc.Client(c.grpc, "gen", "generate").infer([inst(STOP)]))
        assert "'stop'" in err and "tokenizer.json" in err, err
        status, err = rest.post(c, "/v1/completions", {"model": "gen", "prompt": PROMPT_IDS,
                                                       "stop": STOP})
        assert status == 400 and "tokenizer.json" in err["error"]["message"], (status, err)
        r = ssc.Client(c.grpc, "gen", "generate").infer([inst("")])[0]
        assert [int(t) for t in r["tokens"]] == [int(t) for t in REF] and r["text"] == "", r
        print("    without tokenizer.json: %s" % err["error"]["message"][:100])


CASES = [test_grpc_stops, test_rest_stops, test_bad_stops_named]

if __name__ == "__main__":
    sys.exit(run_cases(CASES, sys.argv[2:]))
