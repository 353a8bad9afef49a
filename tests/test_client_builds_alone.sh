#!/bin/sh
# The client library builds on its own: `cmake -DSS_BUILD_SERVER=OFF` configures and builds
# libshardserve-client while pkg-config cannot see any of the server's packages (libmicrohttpd,
# cJSON, GnuTLS, OpenBLAS, oneDNN, MPI), looks none of them up, and the library links none of them.
# The hiding is checked too: the full configure must fail under the same pkg-config view.
# usage: test_client_builds_alone.sh SOURCE_DIR
set -eu
SRC=$(cd "$1" && pwd)
W=$(mktemp -d "${TMPDIR:-/tmp}/ss-client-alone-XXXXXX")
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# A pkg-config search path holding every system .pc file except the server's packages.
HIDDEN='libmicrohttpd cjson gnutls openblas dnnl ompi mpi'
mkdir "$W/pc"
for dir in $(pkg-config --variable pc_path pkg-config | tr ':' ' '); do
  for pc in "$dir"/*.pc; do
    [ -e "$pc" ] || continue
    name=$(basename "$pc")
    skip=no
    for h in $HIDDEN; do case "$name" in *"$h"*) skip=yes ;; esac; done
    [ $skip = yes ] || [ -e "$W/pc/$name" ] || ln -s "$pc" "$W/pc/$name"
  done
done
export PKG_CONFIG_LIBDIR="$W/pc" PKG_CONFIG_PATH=
for m in libmicrohttpd libcjson gnutls openblas; do
  ! pkg-config --exists $m || fail "pkg-config still finds $m"
done
pkg-config --exists grpc libprotobuf-c || fail "pkg-config lost grpc or libprotobuf-c"

# The full build needs the hidden packages: its configure must fail here, or this test proves nothing.
if cmake -S "$SRC" -B "$W/full" >"$W/full.log" 2>&1; then
  fail "the full configure succeeded without the server's packages (are they really hidden?)"
fi

cmake -S "$SRC" -B "$W/build" -DSS_BUILD_SERVER=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$W/configure.log" 2>&1 ||
  { cat "$W/configure.log"; fail "configure with -DSS_BUILD_SERVER=OFF failed"; }
if grep -Ei 'microhttpd|cjson|gnutls|openblas|onnx|dnnl|\bmpi\b|\bompi' "$W/configure.log"; then
  fail "configure with -DSS_BUILD_SERVER=OFF looked up a server package (lines above)"
fi
if grep -E '^(MHD|CJSON|GNUTLS|OPENBLAS|ONNX_PROTO|DNNL|MPI)[A-Z_]*(:|=)' "$W/build/CMakeCache.txt"; then
  fail "the cache of the client-only build holds server package entries (lines above)"
fi
nice -n 10 cmake --build "$W/build" -j2 >"$W/build.log" 2>&1 || { cat "$W/build.log"; fail "build failed"; }
LIB=$(ls "$W"/build/src/client/libshardserve-client.so.* 2>/dev/null | head -n 1)
[ -n "$LIB" ] || fail "no libshardserve-client.so was built"
if readelf -d "$LIB" | grep NEEDED | grep -Ei 'microhttpd|cjson|gnutls|openblas|dnnl|libmpi'; then
  fail "$LIB links a server package (lines above)"
fi
readelf -d "$LIB" | grep NEEDED | grep -q 'libgrpc\.' || fail "$LIB does not link gRPC core"
targets=$(cmake --build "$W/build" --target help | grep -c '^\.\.\. ' || true)
echo "ok: $(basename "$LIB") built alone ($targets build targets), needs: $(readelf -d "$LIB" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
