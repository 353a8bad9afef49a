"""Test harness for the server tests: start ss_test_server on 127.0.0.1 (or a unix socket), learn
its ports, and always stop it again — on success, on a failed check and on an exception. The
server also dies with this process (PR_SET_PDEATHSIG), so nothing outlives a killed test."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

SERVER = os.environ.get("SS_TEST_SERVER")

# The prefix every test puts before a child's argv: setpriv sets the parent-death signal and execs
# the child, so nothing outlives the test. Not a preexec_fn: with one, Python forks with the atfork
# handlers run, and grpcio 1.51's handlers can deadlock a fork made while its threads are busy
# (grpc/grpc#31885) -- a test's client threads retrying a restarting server were, and
# serving_failures hung for its whole timeout. Without one, Python starts the child with vfork,
# which runs no handlers. An absolute path: Popen looks a bare name up in the PATH of the env it
# is given, and a case may give the child a PATH without /usr/bin (test_run_bounds'
# test_mpi_not_found: PATH=/nonexistent). Stdlib only here, so any test may import it.
DIE_WITH_PARENT = [shutil.which("setpriv") or "/usr/bin/setpriv", "--pdeathsig", "KILL", "--"]


class TestServer:
    def __init__(self, grpc="127.0.0.1:0", rest=None, extra=()):
        if not SERVER:
            raise RuntimeError("SS_TEST_SERVER is not set")
        args = [SERVER]
        if grpc:
            args += ["--grpc", grpc]
        if rest:
            args += ["--rest", rest]
        args += list(extra)
        self.stderr = tempfile.TemporaryFile()
        # Under AddressSanitizer freed memory sits in a quarantine, which would look like growth
        # to the memory checks; keep it small (no effect on normal builds).
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=1").lstrip(":")
        self.proc = subprocess.Popen(DIE_WITH_PARENT + args, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, env=env)
        self.grpc_port = self.rest_port = None
        deadline = time.time() + 20
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            line = line.strip()
            if line.startswith("GRPC_PORT="):
                self.grpc_port = int(line.split("=")[1])
            elif line.startswith("REST_PORT="):
                self.rest_port = int(line.split("=")[1])
            elif line == "READY":
                return
        self.stop()
        raise RuntimeError("test server did not start: " + self.log())

    @property
    def grpc_address(self):
        return "127.0.0.1:%d" % self.grpc_port

    @property
    def rest_url(self):
        return "http://127.0.0.1:%d" % self.rest_port

    def log(self):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def stop(self, timeout=30):
        """SIGTERM, wait; returns the exit code (SIGKILL and None if it would not stop)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Checker:
    """Collects failures instead of stopping at the first one; run() reports and sets the exit
    code."""

    def __init__(self):
        self.failures = 0

    def check(self, cond, what):
        if not cond:
            self.failures += 1
            frame = traceback.extract_stack(limit=2)[0]
            print("%s:%d: CHECK failed: %s" % (os.path.basename(frame.filename), frame.lineno,
                                               what), file=sys.stderr)
        return cond

    def eq(self, got, want, what=""):
        return self.check(got == want, "%s: got %r, want %r" % (what, got, want))

    def run(self, cases, server=None):
        """Run the cases; then, if given, stop `server` and require a clean exit (status 0, so
        sanitizer reports fail the test). Exits the process with the result."""
        failed = 0
        for case in cases:
            before = self.failures
            try:
                case(self)
            except Exception:
                traceback.print_exc()
                self.failures += 1
            bad = self.failures != before
            failed += bad
            print("%s %s" % ("FAIL" if bad else "ok  ", case.__name__), flush=True)
        print("%d passed, %d failed" % (len(cases) - failed, failed))
        if server is not None:
            code = server.stop()
            if code != 0:
                print("test server exited with %r:\n%s" % (code, server.log()), file=sys.stderr)
                failed += 1
        sys.exit(1 if failed else 0)


class KServeRpc:
    """Unary calls of inference.GRPCInferenceService on a channel, for the KServe tests."""

    def __init__(self, channel):
        self.channel = channel

    def __call__(self, name, req, resp_type):
        call = self.channel.unary_unary("/inference.GRPCInferenceService/" + name,
                                        request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=resp_type.FromString)
        return call(req, timeout=20)

    def error(self, name, req, resp_type):
        """(grpc status code, details) of a call that must fail."""
        import grpc
        try:
            self(name, req, resp_type)
        except grpc.RpcError as e:
            return e.code(), e.details()
        return None, "call succeeded"
