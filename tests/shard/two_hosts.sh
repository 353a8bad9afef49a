#!/bin/bash
# Two hosts: two network namespaces made by this test, joined by a veth pair with private
# 10.213.7.1/24 (host A) and 10.213.7.2/24 (host B). `shardserve run --comm mpi` runs in host A;
# mpirun gets a hostfile naming both addresses (2 slots each) and an rsh agent that runs the remote
# daemon with `ip netns exec <namespace of that address>`; btl/oob traffic is restricted to the veth
# subnet. Each "host" also gets its own UTS namespace and hostname (ss-hostA-PID / ss-hostB-PID):
# Open MPI names its session folders and shared-memory segments by hostname, and two hosts with
# one name sharing one filesystem would collide (crashes in the vader btl). Checked, for BERT-tiny split 2 + 2 (stage 0 = ranks 0,1 on A; stage 1 = ranks 2,3 on B)
# and a 4-way tensor-parallel split over both hosts:
#   - Open MPI's map puts ranks 0,1 on 10.213.7.1 and 2,3 on 10.213.7.2;
#   - bytes went over the veth pair;
#   - outputs equal the unsharded run within 1e-4; nothing left behind.
# The namespaces are deleted on every exit. Skips (exit 77, reason printed) only where namespaces
# cannot be created.
. "$(dirname "$0")/common.sh"
need_data
command -v ip >/dev/null || { echo "SKIP: no 'ip' command (iproute2), cannot create network namespaces"; exit 77; }
nsA=ss-hostA-$$ nsB=ss-hostB-$$ vA=ssva$$ vB=ssvb$$
ipA=10.213.7.1 ipB=10.213.7.2 net=10.213.7.0/24
delete_namespaces() {
  local ns p
  for ns in $nsA $nsB; do
    ip netns list 2>/dev/null | grep -qw "$ns" || continue
    # processes still inside (ours: nothing else can be in a namespace this test just made)
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null || echo "cleanup: could not delete namespace $ns" >&2
  done
}
CLEANUP_HOOKS="delete_namespaces"
if ! err=$(ip netns add "$nsA" 2>&1); then
  echo "SKIP: cannot create a network namespace here (ip netns add: $err)"
  exit 77
fi
ip netns add "$nsB" || { fail "ip netns add $nsB"; finish; }
ip link add "$vA" netns "$nsA" type veth peer name "$vB" netns "$nsB" || { fail "veth pair"; finish; }
ip -n "$nsA" addr add "$ipA/24" dev "$vA" && ip -n "$nsB" addr add "$ipB/24" dev "$vB" &&
  ip -n "$nsA" link set "$vA" up && ip -n "$nsB" link set "$vB" up &&
  ip -n "$nsA" link set lo up && ip -n "$nsB" link set lo up || { fail "configuring the veth pair"; finish; }
ok "namespaces $nsA ($ipA) and $nsB ($ipB) joined by $vA/$vB"

cat >"$WORK/rsh.sh" <<RSH
#!/bin/sh
# mpirun's remote shell for the two namespace "hosts": rsh.sh HOST COMMAND...
host=\$1
shift
case \$host in
  $ipA) ns=$nsA ;;
  $ipB) ns=$nsB ;;
  *) echo "rsh.sh: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" unshare -u sh -c "hostname \$ns && \$*"
RSH
chmod +x "$WORK/rsh.sh"
printf '%s slots=2\n%s slots=2\n' "$ipA" "$ipB" >"$WORK/hosts"
mkdir -p "$WORK/ompi"
export SHARDSERVE_MPIRUN_ARGS="--hostfile $WORK/hosts --mca plm_rsh_agent $WORK/rsh.sh --display-map --mca btl self,vader,tcp --mca btl_tcp_if_include $net --mca oob_tcp_if_include $net --mca orte_tmpdir_base $WORK/ompi --mca btl_vader_backing_directory $WORK/ompi"

case=bert_tiny_op17
model=$DATA/fx/test_$case/model.onnx
inputs=$(case_inputs "$case")
shapes=$(case_shapes "$case")
outs=$(case_outputs "$case" | paste -sd,)
mkdir -p "$WORK/ref"
# shellcheck disable=SC2086
run_group 60 "$WORK/ref.log" "$SS" run "$model" $inputs --output-dir "$WORK/ref"
[ "$GROUP_RC" -eq 0 ] || { cat "$WORK/ref.log"; fail "unsharded run"; finish; }

tx_bytes() { ip netns exec "$nsA" cat "/sys/class/net/$vA/statistics/tx_bytes"; }
dirs=""
for cfg in 2x2 4x1; do
  tp=${cfg%x*} st=${cfg#*x}
  # shellcheck disable=SC2086
  "$SS" shard "$model" --ranks 4 --stages "$st" --strategy auto $shapes --out "$WORK/shards-$cfg" >"$WORK/shard-$cfg.log" 2>&1 ||
    { cat "$WORK/shard-$cfg.log"; fail "shard $cfg"; continue; }
  mkdir -p "$WORK/out-$cfg"
  before=$(tx_bytes)
  # shellcheck disable=SC2086
  run_group 120 "$WORK/run-$cfg.log" ip netns exec "$nsA" unshare -u "$HERE/with_hostname.sh" "$nsA" "$SS" run --shards "$WORK/shards-$cfg" --comm mpi \
    $inputs --output-dir "$WORK/out-$cfg"
  after=$(tx_bytes)
  cat "$WORK/run-$cfg.log"
  if [ "$GROUP_RC" -ne 0 ]; then
    fail "$cfg over two hosts: run exit $GROUP_RC"
  else
    dirs="$dirs $WORK/out-$cfg"
    echo "ran  $tp ranks/stage x $st stage(s) over two hosts; $((after - before)) bytes left host A over $vA"
  fi
  [ $((after - before)) -ge 4096 ] || fail "$cfg: only $((after - before)) bytes crossed the veth pair"
  # --display-map: "Data for node: <host>" followed by that node's "Process OMPI jobid: ... Process rank: N"
  # (printed twice; mpirun names its own host by hostname, the others by hostfile entry)
  map=$(awk '/Data for node:/ { node = $4 } /Process rank:/ { for (i = 1; i <= NF; i++) if ($i == "rank:") print node, $(i + 1) }' "$WORK/run-$cfg.log" |
    sed "s/^$nsA /$ipA /" | sort -u | sort -k2n | tr '\n' ' ')
  want="$ipA 0 $ipA 1 $ipB 2 $ipB 3 "
  if [ "$map" = "$want" ]; then ok "$cfg: ranks placed (host rank): $map"; else fail "$cfg: rank placement '$map', want '$want'"; fi
  check_clean "$GROUP_PID"
  for ns in $nsA $nsB; do
    left=$(ip netns pids "$ns")
    [ -z "$left" ] || fail "processes left in $ns: $left"
  done
done
# shellcheck disable=SC2086
[ -n "$dirs" ] && { $PY "$TOOL" compare "$WORK/ref" 1e-4 "$outs" $dirs || fail "outputs over two hosts differ from unsharded"; }
finish
