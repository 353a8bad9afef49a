# shellcheck shell=bash disable=SC2034,SC2154 # $here comes from the caller, $grpc/$rest go back
# Sourced by the examples' run_all.sh (which set $here, their own folder): serve_one_rank starts
# `shardserve serve` on $work/servables/$1 (one rank, 127.0.0.1, ports picked by the OS) and one
# agent on the ONNX file $2 (sharded for 1 rank first), waits until the servable is ready, and sets
# $grpc and $rest; serve_config_example does that for $here/$1/servable_config.py with the model
# $here/make_model.py writes as version 1's $2. Everything stops, and $work goes, on exit.
shardserve=${SHARDSERVE:-$here/../../build/src/cli/shardserve}
work=$(mktemp -d)
server_pid="" agents_pid=""
serve_one_rank_cleanup() {
    [[ -n "$agents_pid" ]] && kill "$agents_pid" 2>/dev/null && wait "$agents_pid" 2>/dev/null
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}

serve_one_rank() {
    local servable=$1 model=$2 address
    "$shardserve" shard "$model" --ranks 1 --out "$work/model" --quiet
    cat >"$work/rank_table.json" <<'JSON'
{"version": "1.0", "server_count": "1", "status": "completed", "server_list": [{"server_id": "127.0.0.1",
 "device": [{"device_id": "0", "device_ip": "192.1.27.0", "rank_id": "0"}], "host_nic_ip": "reserve"}]}
JSON
    "$shardserve" serve --servable-dir "$work/servables" --servable "$servable" --version 1 \
        --rank-table "$work/rank_table.json" --distributed-address 127.0.0.1:0 --wait-agents 60 \
        --grpc 127.0.0.1:0 --rest 127.0.0.1:0 >"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 300); do grep -q "waiting for agents on" "$work/server.log" && break; sleep 0.1; done
    address=$(sed -n 's/.*waiting for agents on \([^ ]*\).*/\1/p' "$work/server.log" | head -1)
    if [[ -z "$address" ]]; then
        echo "the server did not start:" >&2
        cat "$work/server.log" >&2
        return 1
    fi
    grep "ONNX sibling" "$work/server.log" || true
    "$shardserve" agents --distributed-address "$address" \
        --model-files "$work/model/device0/$(basename "$model")" >"$work/agents.log" 2>&1 &
    agents_pid=$!
    for _ in $(seq 1 300); do grep -q "is ready" "$work/server.log" && break; sleep 0.1; done
    if ! grep -q "is ready" "$work/server.log"; then
        echo "the server did not become ready:" >&2
        cat "$work/server.log" "$work/agents.log" >&2
        return 1
    fi
    grpc=$(sed -n 's/^Serving: Serving gRPC server start success, listening on \(.*\)/\1/p' "$work/server.log")
    rest=$(sed -n 's/^Serving: Serving RESTful server start success, listening on \(.*\)/\1/p' "$work/server.log")
}

serve_config_example() {
    mkdir -p "$work/servables/$1/1"
    cp "$here/$1/servable_config.py" "$work/servables/$1/"
    /usr/bin/python3 "$here/make_model.py" "$work/servables/$1/1/$2"
    serve_one_rank "$1" "$work/servables/$1/1/$2"
}

trap serve_one_rank_cleanup EXIT
