"""TLS and mutual TLS on the gRPC and REST front ends (MindSpore's SSLConfig).

Certificates are made here with openssl: a CA, a server certificate for localhost/127.0.0.1, a
client certificate from the same CA, and a "stranger" CA with its own client certificate. Two test
servers run on 127.0.0.1: one requires client certificates (verify_client) on both front ends,
one serves TLS without asking for them. Clients: grpcio, shardserve_client, the C client
(test_tls_client), Python ssl/urllib, curl and openssl s_client. Every refusal must come within
seconds (no hang), and each server must still answer a good request afterwards and exit 0."""

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings

import grpc
import numpy as np

import ms_service_pb2
import shardserve_client
from server_harness import Checker, TestServer

OPENSSL = os.environ.get("SS_OPENSSL", "openssl")
CURL = os.environ.get("SS_CURL", "curl")
C_CLIENT = os.environ["SS_TLS_CLIENT"]
SHARDSERVE = os.environ.get("SS_SHARDSERVE")
PREDICT = "/mindspore.serving.proto.MSService/Predict"
HEALTH = "/grpc.health.v1.Health/Check"
BODY = json.dumps({"instances": [{"x1": [1.0, 2.0], "x2": [3.0, 4.0]}]}).encode()
WANT = {"instances": [{"y": [4.0, 6.0], "version": 2}]}
# A TLS-refusal must show within this many seconds.
QUICK = 10

warnings.filterwarnings("ignore", category=DeprecationWarning)  # TLS 1.0/1.1 on purpose
D = tempfile.mkdtemp(prefix="ss-tls-")


def path(name):
    return os.path.join(D, name)


def openssl(*args):
    subprocess.run([OPENSSL] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, cwd=D)


def make_ca(name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-subj",
            "/CN=shardserve test " + name, "-days", "2", "-out", name + ".crt", "-addext",
            "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def make_cert(name, cn, ca, ext):
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-subj",
            "/CN=" + cn, "-out", name + ".csr")
    with open(path(name + ".ext"), "w") as f:
        f.write(ext)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
            "-CAcreateserial", "-days", "2", "-out", name + ".crt", "-extfile", name + ".ext")


def make_certificates():
    make_ca("ca")
    make_ca("other")
    make_cert("server", "localhost", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
              "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    make_cert("client", "client", "ca", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    make_cert("stranger", "stranger", "other",
              "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    # The same server key, encrypted: there is no way to give a passphrase, so it must be refused.
    openssl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:secret", "-out",
            "server-enc.key")


def tls_args(front, verify):
    args = ["--%s-tls-cert" % front, path("server.crt"), "--%s-tls-key" % front,
            path("server.key")]
    if verify:
        args += ["--%s-tls-ca" % front, path("ca.crt"), "--%s-verify-client" % front]
    return args


def read(name):
    with open(path(name), "rb") as f:
        return f.read()


# ------------------------------------------------------------------ gRPC helpers

def grpc_creds(ca="ca.crt", cert="client.crt", key="client.key"):
    return grpc.ssl_channel_credentials(root_certificates=read(ca) if ca else None,
                                        private_key=read(key) if key else None,
                                        certificate_chain=read(cert) if cert else None)


def add_request():
    req = ms_service_pb2.PredictRequest()
    req.servable_spec.name = "add"
    req.servable_spec.method_name = "add_common"
    inst = req.instances.add()
    for name, values in (("x1", [1.0, 2.0]), ("x2", [3.0, 4.0])):
        t = inst.items[name]
        t.dtype = ms_service_pb2.MS_FLOAT32
        t.shape.dims.append(2)
        t.data = np.array(values, np.float32).tobytes()
    return req


def grpcio_predict(address, creds):
    """(y as a list, None) or (None, grpc status code)."""
    channel = grpc.secure_channel(address, creds) if creds else grpc.insecure_channel(address)
    try:
        predict = channel.unary_unary(
            PREDICT, request_serializer=ms_service_pb2.PredictRequest.SerializeToString,
            response_deserializer=ms_service_pb2.PredictReply.FromString)
        reply = predict(add_request(), timeout=QUICK)
        y = reply.instances[0].items["y"]
        return np.frombuffer(y.data, np.float32).tolist(), None
    except grpc.RpcError as e:
        return None, e.code()
    finally:
        channel.close()


def ms_client(address, **ssl):
    cfg = shardserve_client.SSLConfig(**ssl) if ssl else None
    c = shardserve_client.Client(address, "add", "add_common", ssl_config=cfg)
    try:
        return c.infer({"x1": np.array([1, 2], np.float32), "x2": np.array([3, 4], np.float32)})
    finally:
        c.close()


def c_client(address, *args):
    p = subprocess.run([C_CLIENT, address] + list(args), capture_output=True, text=True,
                       timeout=60)
    return p.returncode, p.stdout.strip()


def timed(fn, *args, **kw):
    t = time.time()
    r = fn(*args, **kw)
    return r, time.time() - t


# ------------------------------------------------------------------ REST helpers

def rest_context(ca="ca.crt", cert="client.crt", key="client.key"):
    ctx = ssl.create_default_context(cafile=path(ca))
    if cert:
        ctx.load_cert_chain(path(cert), path(key))
    return ctx


def rest_post(url, ctx):
    """(parsed JSON, None) or (None, exception)."""
    req = urllib.request.Request(url + "/model/add:add_common", data=BODY,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=QUICK) as r:
            return json.loads(r.read()), None
    except (urllib.error.URLError, OSError, ssl.SSLError, ConnectionError) as e:
        return None, e
    except Exception as e:  # http.client.RemoteDisconnected and friends
        return None, e


def https(server):
    return "https://127.0.0.1:%d" % server.rest_port


def curl(*args):
    p = subprocess.run([CURL, "-sS", "--max-time", str(QUICK)] + list(args), capture_output=True,
                       text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr.strip()


def handshake(port, version, ctx_setup=None, cert=True):
    """Open a raw TLS connection with Python's ssl limited to `version`; returns the negotiated
    version or the exception."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(path("ca.crt"))
    if cert:
        ctx.load_cert_chain(path("client.crt"), path("client.key"))
    ctx.minimum_version = version
    ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL 3 offer TLS 1.0/1.1 at all
    if ctx_setup:
        ctx_setup(ctx)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=QUICK) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.version()
    except (ssl.SSLError, OSError) as e:
        return e


class LegacyTLSServer:
    """A Python TLS server accepting TLS 1.0 upwards: the control that proves the client of
    rest_old_tls_refused really offers TLS 1.0/1.1 (so its refusal is the server's doing)."""

    def __init__(self):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(path("server.crt"), path("server.key"))
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1
        self.ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(QUICK)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        for _ in range(2):
            try:
                conn, _ = self.sock.accept()
                with self.ctx.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)
            except (OSError, ssl.SSLError):
                pass

    def close(self):
        self.sock.close()


# ------------------------------------------------------------------ servers and cases

mtls = plain_tls = None


def grpc_mutual_tls_works(c):
    a = mtls.grpc_address
    y, code = grpcio_predict(a, grpc_creds())
    c.eq((y, code), ([4.0, 6.0], None), "grpcio with a client certificate")
    r = ms_client(a, certificate=path("client.crt"), private_key=path("client.key"),
                  custom_ca=path("ca.crt"))
    c.check(isinstance(r, list) and r[0]["y"].tolist() == [4.0, 6.0],
            "shardserve_client with a client certificate: %r" % (r,))
    rc, out = c_client(a, "--ca", path("ca.crt"), "--cert", path("client.crt"), "--key",
                       path("client.key"))
    c.eq((rc, out), (0, "OK"), "C client with a client certificate")
    # the health service is behind the same TLS
    channel = grpc.secure_channel(a, grpc_creds())
    health = channel.unary_unary(HEALTH, request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)
    c.eq(health(b"", timeout=QUICK), b"\x08\x01", "grpc health over mutual TLS")
    channel.close()


def grpc_no_client_certificate_refused(c):
    a = mtls.grpc_address
    (y, code), secs = timed(grpcio_predict, a, grpc_creds(cert=None, key=None))
    c.eq((y, code), (None, grpc.StatusCode.UNAVAILABLE), "grpcio without a client certificate")
    c.check(secs < QUICK, "refusal took %.1f s" % secs)
    r = ms_client(a, custom_ca=path("ca.crt"))
    c.check(isinstance(r, dict) and r["error"].startswith("Grpc Error, (14"),
            "shardserve_client without a client certificate: %r" % (r,))
    rc, out = c_client(a, "--ca", path("ca.crt"))
    c.check(rc == 1 and out.startswith("ERROR transport 14"), "C client: %d %r" % (rc, out))


def grpc_client_certificate_from_other_ca_refused(c):
    a = mtls.grpc_address
    y, code = grpcio_predict(a, grpc_creds(cert="stranger.crt", key="stranger.key"))
    c.eq((y, code), (None, grpc.StatusCode.UNAVAILABLE), "grpcio with a stranger's certificate")
    r = ms_client(a, certificate=path("stranger.crt"), private_key=path("stranger.key"),
                  custom_ca=path("ca.crt"))
    c.check(isinstance(r, dict) and "Grpc Error, (14" in r["error"], "shardserve_client: %r" % (r,))
    rc, out = c_client(a, "--ca", path("ca.crt"), "--cert", path("stranger.crt"), "--key",
                       path("stranger.key"))
    c.check(rc == 1 and out.startswith("ERROR transport 14"), "C client: %d %r" % (rc, out))


def grpc_server_from_other_ca_refused_by_clients(c):
    a = plain_tls.grpc_address
    y, code = grpcio_predict(a, grpc_creds(ca="other.crt", cert=None, key=None))
    c.eq((y, code), (None, grpc.StatusCode.UNAVAILABLE), "grpcio trusting another CA")
    rc, out = c_client(a, "--ca", path("other.crt"))
    c.check(rc == 1 and out.startswith("ERROR transport 14"), "C client: %d %r" % (rc, out))


def grpc_plaintext_to_tls_port_fails_cleanly(c):
    for server in (mtls, plain_tls):
        (y, code), secs = timed(grpcio_predict, server.grpc_address, None)
        c.eq((y, code), (None, grpc.StatusCode.UNAVAILABLE), "insecure channel to a TLS port")
        c.check(secs < QUICK, "plaintext refusal took %.1f s" % secs)
        rc, out = c_client(server.grpc_address, "--plain")
        c.check(rc == 1 and out.startswith("ERROR transport 14"), "C client: %d %r" % (rc, out))
    # and TLS to a plaintext port fails as cleanly
    with TestServer(grpc="127.0.0.1:0") as plain:
        y, code = grpcio_predict(plain.grpc_address, grpc_creds())
        c.eq((y, code), (None, grpc.StatusCode.UNAVAILABLE), "TLS channel to a plaintext port")
        c.eq(grpcio_predict(plain.grpc_address, None)[0], [4.0, 6.0], "plaintext still works")


def grpc_tls_without_client_verification(c):
    a = plain_tls.grpc_address
    c.eq(grpcio_predict(a, grpc_creds(cert=None, key=None)), ([4.0, 6.0], None),
         "grpcio, server certificate only")
    r = ms_client(a, custom_ca=path("ca.crt"))
    c.check(isinstance(r, list) and r[0]["y"].tolist() == [4.0, 6.0],
            "shardserve_client: %r" % (r,))
    c.eq(c_client(a, "--ca", path("ca.crt")), (0, "OK"), "C client, server certificate only")


def grpc_old_tls_refused(c):
    port = mtls.grpc_port
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        r = handshake(port, version)
        c.check(isinstance(r, Exception), "gRPC port accepted %s: %r" % (version.name, r))


def client_argument_errors(c):
    rc, out = c_client("127.0.0.1:1", "--ca", path("missing.crt"))
    c.check(rc == 1 and out.startswith("ERROR argument") and "missing.crt" in out, out)
    rc, out = c_client("127.0.0.1:1", "--cert", path("client.crt"))
    c.check(rc == 1 and "together" in out, out)
    try:
        shardserve_client.SSLConfig(certificate=path("client.crt"))
        c.check(False, "SSLConfig with a certificate and no key")
    except RuntimeError:
        pass


def rest_mutual_tls_works(c):
    got, err = rest_post(https(mtls), rest_context())
    c.eq((got, err), (WANT, None), "urllib with a client certificate")
    rc, out, errtext = curl("--cacert", path("ca.crt"), "--cert", path("client.crt"), "--key",
                            path("client.key"), "-d", BODY.decode(),
                            https(mtls) + "/model/add:add_common")
    c.check(rc == 0 and json.loads(out or "null") == WANT, "curl: %d %r %s" % (rc, out, errtext))
    rc, out, _ = curl("--cacert", path("ca.crt"), "--cert", path("client.crt"), "--key",
                      path("client.key"), https(mtls) + "/health/ready")
    c.eq((rc, out), (0, '{"status":"ready"}'), "health over HTTPS")


def rest_no_client_certificate_refused(c):
    (got, err), secs = timed(rest_post, https(mtls), rest_context(cert=None))
    c.check(got is None and err is not None, "urllib without a client certificate got %r" % got)
    c.check(secs < QUICK, "refusal took %.1f s" % secs)
    rc, out, _ = curl("--cacert", path("ca.crt"), "-d", BODY.decode(),
                      https(mtls) + "/model/add:add_common")
    c.check(rc != 0 and not out, "curl without a client certificate: %d %r" % (rc, out))
    # the handshake itself fails with TLS 1.2 (with 1.3 the client learns it on first read)
    r = handshake(mtls.rest_port, ssl.TLSVersion.TLSv1_2, cert=False)
    c.check(isinstance(r, Exception), "TLS 1.2 handshake without a certificate: %r" % (r,))


def rest_client_certificate_from_other_ca_refused(c):
    got, err = rest_post(https(mtls), rest_context(cert="stranger.crt", key="stranger.key"))
    c.check(got is None and err is not None, "urllib with a stranger's certificate got %r" % got)
    rc, out, _ = curl("--cacert", path("ca.crt"), "--cert", path("stranger.crt"), "--key",
                      path("stranger.key"), "-d", BODY.decode(),
                      https(mtls) + "/model/add:add_common")
    c.check(rc != 0 and not out, "curl with a stranger's certificate: %d %r" % (rc, out))
    # and a client that trusts another CA refuses our server
    got, err = rest_post(https(plain_tls), rest_context(ca="other.crt", cert=None))
    c.check(got is None and isinstance(err, (ssl.SSLError, urllib.error.URLError)),
            "urllib trusting another CA: %r %r" % (got, err))


def rest_plaintext_to_https_port_fails_cleanly(c):
    for server in (mtls, plain_tls):
        url = "http://127.0.0.1:%d" % server.rest_port
        (got, err), secs = timed(rest_post, url, None)
        c.check(got is None and err is not None, "plain HTTP to HTTPS got %r" % (got,))
        c.check(secs < QUICK, "plain HTTP refusal took %.1f s" % secs)
        rc, out, _ = curl("-d", BODY.decode(), url + "/model/add:add_common")
        c.check(rc != 0 and not out, "curl plain HTTP to HTTPS: %d %r" % (rc, out))


def rest_old_tls_refused(c):
    legacy = LegacyTLSServer()
    try:
        for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            control = handshake(legacy.port, version)
            c.eq(control, version.name.replace("_", "."),
                 "control: the client speaks %s" % version.name)
            for server in (mtls, plain_tls):
                r = handshake(server.rest_port, version)
                c.check(isinstance(r, Exception), "REST accepted %s: %r" % (version.name, r))
    finally:
        legacy.close()
    rc, out, _ = curl("--cacert", path("ca.crt"), "--tlsv1.0", "--tls-max", "1.1", "--ciphers",
                      "DEFAULT@SECLEVEL=0", https(plain_tls) + "/health/live")
    c.check(rc != 0 and not out, "curl TLS 1.0/1.1: %d %r" % (rc, out))
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        c.eq(handshake(mtls.rest_port, version), version.name.replace("_", "."),
             "REST with %s" % version.name)
    # TLS 1.2 without forward secrecy (RSA key exchange) is refused, ECDHE is taken
    r = handshake(plain_tls.rest_port, ssl.TLSVersion.TLSv1_2,
                  lambda ctx: ctx.set_ciphers("AES128-GCM-SHA256"), cert=False)
    c.check(isinstance(r, Exception), "REST accepted TLS 1.2 RSA key exchange: %r" % (r,))
    r = handshake(plain_tls.rest_port, ssl.TLSVersion.TLSv1_2,
                  lambda ctx: ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256"), cert=False)
    c.eq(r, "TLSv1.2", "REST with ECDHE-RSA-AES128-GCM-SHA256")


def rest_tls_without_client_verification(c):
    c.eq(rest_post(https(plain_tls), rest_context(cert=None)), (WANT, None),
         "urllib, server certificate only")
    rc, out, _ = curl("--cacert", path("ca.crt"), "-d", BODY.decode(),
                      https(plain_tls) + "/model/add:add_common")
    c.check(rc == 0 and json.loads(out or "null") == WANT, "curl: %d %r" % (rc, out))


def still_serving_after_refusals(c):
    c.eq(grpcio_predict(mtls.grpc_address, grpc_creds()), ([4.0, 6.0], None), "gRPC")
    c.eq(rest_post(https(mtls), rest_context()), (WANT, None), "REST")


def start_failure(args, want):
    p = subprocess.run([os.environ["SS_TEST_SERVER"]] + args, capture_output=True, text=True,
                       timeout=60)
    return p.returncode == 1 and want in p.stderr, "%d %s" % (p.returncode, p.stderr.strip())


def bad_configurations_fail_at_start(c):
    cases = [
        (["--grpc-tls-cert", path("server.crt"), "--grpc-tls-key", path("client.key")],
         "does not match"),
        (["--grpc-tls-cert", path("nope.crt"), "--grpc-tls-key", path("server.key")],
         "load certificate from %s failed" % path("nope.crt")),
        (["--grpc-tls-cert", path("server.crt"), "--grpc-tls-key", path("server-enc.key")],
         "load private_key from %s failed" % path("server-enc.key")),
        (["--grpc-tls-cert", path("server.crt"), "--grpc-tls-key", path("server.key"),
          "--grpc-verify-client"], "verify_client needs custom_ca"),
        (["--grpc-tls-cert", path("server.crt"), "--grpc-tls-key", path("server.key"),
          "--grpc-tls-ca", path("server.key"), "--grpc-verify-client"], "load custom_ca from"),
        (["--grpc-tls-cert", path("server.key"), "--grpc-tls-key", path("server.key")],
         "load certificate from"),
    ]
    for args, want in cases:
        for front in ("grpc", "rest"):
            a = [x.replace("--grpc-", "--%s-" % front) for x in args]
            ok, what = start_failure(["--%s" % front, "127.0.0.1:0"] + a, want)
            c.check(ok, "%s %s: want %r, got %s" % (front, " ".join(a), want, what))


def serve_cli_checks_tls_flags(c):
    if not SHARDSERVE or not os.path.exists(SHARDSERVE):
        c.check(False, "shardserve binary missing: %r" % SHARDSERVE)
        return
    base = [SHARDSERVE, "serve", "--servable-dir", D, "--servable", "x", "--rank-table",
            path("none.json"), "--distributed-address", "127.0.0.1:0", "--grpc", "127.0.0.1:0"]
    cases = [
        (["--grpc-tls-cert", path("server.crt")], "--grpc-tls-cert and --grpc-tls-key go together"),
        (["--grpc-tls-cert", path("server.crt"), "--grpc-tls-key", path("server.key"),
          "--grpc-verify-client"], "--grpc-verify-client and --grpc-tls-ca go together"),
        (["--rest-tls-cert", path("server.crt"), "--rest-tls-key", path("server.key")],
         "--rest-tls-* given without --rest"),
    ]
    for extra, want in cases:
        p = subprocess.run(base + extra, capture_output=True, text=True, timeout=60)
        c.check(p.returncode != 0 and want in p.stderr,
                "%s: %d %s" % (" ".join(extra), p.returncode, p.stderr.strip()))
    p = subprocess.run([SHARDSERVE, "serve", "--help"], capture_output=True, text=True, timeout=60)
    c.check("--grpc-tls-cert" in p.stdout and "--rest-verify-client" in p.stdout, "serve --help")


def infer_cli_over_tls(c):
    if not SHARDSERVE or not os.path.exists(SHARDSERVE):
        c.check(False, "shardserve binary missing: %r" % SHARDSERVE)
        return
    np.save(path("x1.npy"), np.array([1, 2], np.float32))
    np.save(path("x2.npy"), np.array([3, 4], np.float32))
    base = [SHARDSERVE, "infer", "--address", mtls.grpc_address, "--servable", "add", "--method",
            "add_common", "--input", "x1=" + path("x1.npy"), "--input", "x2=" + path("x2.npy"),
            "--timeout-ms", str(QUICK * 1000)]
    mutual = ["--tls-ca", path("ca.crt"), "--tls-cert", path("client.crt"), "--tls-key",
              path("client.key")]
    p = subprocess.run(base + mutual, capture_output=True, text=True, timeout=60)
    c.check(p.returncode == 0 and "[4, 6]" in p.stdout, "infer with a client certificate: %d %s %s"
            % (p.returncode, p.stdout, p.stderr))
    for extra in (["--tls-ca", path("ca.crt")], []):
        p = subprocess.run(base + extra, capture_output=True, text=True, timeout=60)
        c.check(p.returncode == 1 and "transport error 14" in p.stderr,
                "infer %s: %d %s" % (" ".join(extra), p.returncode, p.stderr))


def serve_end_to_end_over_mutual_tls(c):
    """`shardserve serve` with both front ends on mutual TLS, two agents, a sharded model."""
    if not SHARDSERVE or not os.path.exists(SHARDSERVE):
        c.check(False, "shardserve binary missing: %r" % SHARDSERVE)
        return
    os.environ["SHARDSERVE"] = SHARDSERVE
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "serving"))
    import cluster
    with cluster.Cluster() as cl:
        model = os.path.join(cl.dir, "matmul.onnx")
        cluster.matmul_neg_model(model)
        models = cl.add_servable("matmul", model, 2)
        table = cl.write_rank_table(2)
        cl.serve([("matmul", 1, table)], extra=tls_args("grpc", True) + tls_args("rest", True))
        cl.agents(cl.worker_addresses["matmul"][0], models)
        cl.wait_ready()
        ones = np.ones((128, 96), np.float32)
        cfg = shardserve_client.SSLConfig(path("client.crt"), path("client.key"), path("ca.crt"))
        r = shardserve_client.Client(cl.grpc, "matmul", "predict", ssl_config=cfg).infer({"x": ones})
        c.check(isinstance(r, list) and (r[0]["y"] == -48).all(), "serve over gRPC TLS: %r" % (r,))
        r = shardserve_client.Client(cl.grpc, "matmul", "predict",
                                     ssl_config=shardserve_client.SSLConfig(
                                         custom_ca=path("ca.crt"))).infer({"x": ones})
        c.check(isinstance(r, dict) and "Grpc Error, (14" in r.get("error", ""),
                "serve, no client certificate: %r" % (r,))
        body = json.dumps({"instances": [{"x": ones.tolist()}]})
        port = cl.rest.rsplit(":", 1)[1]
        rc, out, err = curl("--cacert", path("ca.crt"), "--cert", path("client.crt"), "--key",
                            path("client.key"), "-d", body,
                            "https://127.0.0.1:%s/model/matmul:predict" % port)
        y = json.loads(out)["instances"][0]["y"] if rc == 0 else None
        c.check(y is not None and (np.array(y) == -48).all(), "serve over HTTPS: %d %s" % (rc, err))
        rc, out, _ = curl("--cacert", path("ca.crt"), "-d", body,
                          "https://127.0.0.1:%s/model/matmul:predict" % port)
        c.check(rc != 0 and not out, "serve HTTPS without a client certificate: %d" % rc)


def plain_tls_server_exits_cleanly(c):
    code = plain_tls.stop()
    c.eq(code, 0, "server without client verification: exit status\n" + plain_tls.log())


def main():
    global mtls, plain_tls
    make_certificates()
    try:
        mtls = TestServer(grpc="127.0.0.1:0", rest="127.0.0.1:0",
                          extra=tls_args("grpc", True) + tls_args("rest", True))
        plain_tls = TestServer(grpc="127.0.0.1:0", rest="127.0.0.1:0",
                               extra=tls_args("grpc", False) + tls_args("rest", False))
        cases = [grpc_mutual_tls_works, grpc_no_client_certificate_refused,
                 grpc_client_certificate_from_other_ca_refused,
                 grpc_server_from_other_ca_refused_by_clients,
                 grpc_plaintext_to_tls_port_fails_cleanly, grpc_tls_without_client_verification,
                 grpc_old_tls_refused, client_argument_errors, rest_mutual_tls_works,
                 rest_no_client_certificate_refused, rest_client_certificate_from_other_ca_refused,
                 rest_plaintext_to_https_port_fails_cleanly, rest_old_tls_refused,
                 rest_tls_without_client_verification, still_serving_after_refusals,
                 bad_configurations_fail_at_start, serve_cli_checks_tls_flags, infer_cli_over_tls,
                 serve_end_to_end_over_mutual_tls,
                 plain_tls_server_exits_cleanly]
        Checker().run(cases, server=mtls)  # stops mtls, requires exit 0, exits
    finally:
        for server in (plain_tls, mtls):
            if server:
                server.stop()
        shutil.rmtree(D, ignore_errors=True)


if __name__ == "__main__":
    main()
