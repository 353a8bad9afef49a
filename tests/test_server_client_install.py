"""libshardserve-client as a user gets it: the shared library exports only ss_client_* (no
server code, no protobuf-c symbols), `cmake --install --component client` puts the library,
include/shardserve/client.h and lib/pkgconfig/shardserve-client.pc under a prefix, and a program
compiled with nothing but `pkg-config --cflags --libs shardserve-client` calls the test server."""

import os
import shutil
import subprocess
import tempfile

from server_harness import Checker, TestServer

BUILD = os.environ.get("SS_BUILD_DIR")
LIB = os.environ.get("SS_CLIENT_LIB")

PROGRAM = r"""
#include <shardserve/client.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    ss_client *c;
    ss_client_options o = {.address = argv[1], .timeout_ms = 10000};
    ss_client_error *e = ss_client_connect(&o, &c);
    if (e) { printf("connect: %s\n", e->msg); return 1; }
    ss_client_request *r = ss_client_request_new("add", "add_common", 0);
    float a[2] = {1, 2}, b[2] = {10, 20};
    int64_t dims[1] = {2};
    size_t i = ss_client_request_add_instance(r);
    ss_client_request_set_tensor(r, i, "x1", SS_CLIENT_FLOAT32, dims, 1, a, sizeof a);
    ss_client_request_set_tensor(r, i, "x2", SS_CLIENT_FLOAT32, dims, 1, b, sizeof b);
    ss_client_reply *reply;
    e = ss_client_infer(c, r, &reply);
    if (e) { printf("infer: %s\n", e->msg); return 1; }
    ss_client_tensor y;
    if (!ss_client_reply_find(reply, 0, "y", &y)) return 1;
    printf("y=%g,%g\n", ((const float *)y.data)[0], ((const float *)y.data)[1]);
    ss_client_reply_free(reply);
    ss_client_request_free(r);
    ss_client_close(c);
    return 0;
}
"""


def exports(c):
    out = subprocess.run(["nm", "-D", "--defined-only", LIB], capture_output=True, text=True)
    c.eq(out.returncode, 0, "nm")
    names = [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]
    c.check(len(names) > 10, "exports found: %d" % len(names))
    c.eq([n for n in names if not n.startswith("ss_client_")], [], "only ss_client_* exported")
    out = subprocess.run(["nm", "-u", LIB], capture_output=True, text=True)
    c.eq([n for n in out.stdout.split() if n.startswith("ss_") and not n.startswith("ss_client_")],
         [], "no shardserve module symbols needed")


def install_and_build(c):
    prefix = tempfile.mkdtemp(prefix="ss-client-install-")
    try:
        out = subprocess.run(["cmake", "--install", BUILD, "--component", "client",
                              "--prefix", prefix], capture_output=True, text=True)
        c.check(out.returncode == 0, "cmake --install: " + out.stderr)
        for path in ["include/shardserve/client.h", "lib/pkgconfig/shardserve-client.pc"]:
            c.check(os.path.exists(os.path.join(prefix, path)), path + " installed")
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(prefix, "lib", "pkgconfig"))
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "shardserve-client"],
                               capture_output=True, text=True, env=env)
        c.check(flags.returncode == 0 and prefix in flags.stdout, "pkg-config: " + flags.stdout)
        src = os.path.join(prefix, "example.c")
        with open(src, "w") as f:
            f.write(PROGRAM)
        exe = os.path.join(prefix, "example")
        # a sanitizer build of the library needs the program built the same way
        ldd = subprocess.run(["ldd", LIB], capture_output=True, text=True).stdout
        sanitize = ["-fsanitize=address,undefined"] if "libasan" in ldd else []
        cc = subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", src, "-o", exe] + sanitize
                            + flags.stdout.split(), capture_output=True, text=True)
        c.check(cc.returncode == 0, "compile: " + cc.stderr)
        if cc.returncode != 0:
            return
        run_env = dict(env, LD_LIBRARY_PATH=os.path.join(prefix, "lib"))
        if sanitize:
            # the library's UBSan checks trap (SIGILL): reported by ASan, as in the build's own
            # programs (src/core/sanitizer_defaults.c), not a silent death
            run_env["ASAN_OPTIONS"] = (run_env.get("ASAN_OPTIONS", "") + ":handle_sigill=1").lstrip(":")
        with TestServer() as srv:
            run = subprocess.run([exe, srv.grpc_address], capture_output=True, text=True,
                                 timeout=60, env=run_env)
            c.eq(run.stdout.strip(), "y=11,22", "installed client works: " + run.stderr)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    Checker().run([exports, install_and_build])
