#!/usr/bin/env bash
# tests/launch/slurm_test.sh -- a real single-node Slurm (munged, slurmctld, slurmd from Debian,
# PMIx, state in a temp directory, non-default ports) runs launch/slurm/train.sbatch for
# configs/tiny.yaml with 2 tasks, then a USR1 preemption round trip, then a launch without PMIx.
# Stops only the daemons it started. Exit 77 (ctest: skipped) with the reason when it cannot run.
# Usage: slurm_test.sh PATH/TO/lmforge   (from the source root)
set -u
LMFORGE=$(readlink -f "${1:?usage: slurm_test.sh LMFORGE}")
skip() { echo "SKIPPED: $*"; exit 77; }
for tool in munged slurmctld slurmd sbatch srun scontrol sinfo; do
  command -v $tool >/dev/null || skip "$tool is not installed (launch/setup.sh installs slurmctld slurmd slurm-client munge)"
done
[ -f /usr/lib/x86_64-linux-gnu/slurm-wlm/mpi_pmix.so ] || skip "Slurm's PMIx plugin (mpi_pmix.so) is missing"
[ "$(id -u)" = 0 ] || skip "starting slurmd needs root"

work=$(mktemp -d /tmp/lmforge_slurm.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; kill -9 "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; for f in "$@"; do [ -f "$f" ] && tail -15 "$f" | sed 's/^/    /'; done; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# munge: its own key, socket and state, as root (--force: no dedicated munge user here).
mkdir -p "$work/munge"
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 700 "$work/munge"; chmod 400 "$work/munge/munge.key"
munged --force --socket="$work/munge/socket" --key-file="$work/munge/munge.key" --pid-file="$work/munge/pid" \
  --log-file="$work/munge/log" --seed-file="$work/munge/seed" || skip "munged would not start: $(tail -2 "$work/munge/log")"
pids+=("$(cat "$work/munge/pid")")

host=$(hostname -s)
cpus=$(nproc)
mkdir -p "$work/state" "$work/spool" "$work/runs"
cat >"$work/slurm.conf" <<CONF
ClusterName=lmforgetest
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$work/munge/socket,cred_expire=10
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
JobRequeue=1
ReturnToService=2
SchedulerType=sched/backfill
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
export SLURM_CONF=$work/slurm.conf
slurmctld -D -f "$SLURM_CONF" >"$work/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$work/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 0.2; done
sinfo -h -o %T 2>/dev/null | grep -q idle && ok "local Slurm up: node $host idle" \
  || { not_ok "Slurm did not come up" "$work/slurmctld.log" "$work/slurmd.log"; exit 1; }

# Waits for job $1 to reach state $2 (default COMPLETED) within $3 seconds.
wait_job() {
  for _ in $(seq $((${3:-240} * 5))); do
    state=$(scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
    case "$state" in "${2:-COMPLETED}") return 0 ;; FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) return 1 ;; esac
    sleep 0.2
  done
  return 1
}
series() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if "loss" in r: print(r["step"], repr(r["loss"]))' "$1/metrics.jsonl"; }

export LMFORGE_BIN=$LMFORGE
common=(--set "data.cache_dir=$work/cache" --set train.log_every=1 --set train.eval_every=0)
job=$(launch/slurm/submit.sh configs/tiny.yaml --ntasks-per-node 2 "${common[@]}" --set train.max_steps=40 \
      --set "run.output_dir=$work/runs/plain")
if wait_job "$job"; then ok "sbatch job $job (2 tasks) completed"; else not_ok "job $job" "$work"/runs/plain/tiny/slurm-*.out "$work/slurmd.log"; fi
d=$(ls -d "$work"/runs/plain/tiny/*/ 2>/dev/null | head -1)
if [ -n "$d" ] && grep -q '"world_size": 2' "$d/meta.json" && grep -q '"launcher": "slurm"' "$d/meta.json" \
  && grep -q '"status": "completed"' "$d/meta.json"; then ok "run record: 2 ranks, launcher slurm, completed"
else not_ok "run record of the Slurm job" "$d/meta.json" "$work"/runs/plain/tiny/slurm-*.out; fi

# Preemption round trip: USR1 to the batch shell (as --signal=B:USR1@120 does before the time
# limit) -> every rank checkpoints and exits 3 -> the job requeues itself -> the requeued job
# resumes the same run. The losses must equal an uninterrupted 2-rank run's, step for step.
long=("${common[@]}" --set train.max_steps=300 --set checkpoint.every_steps=25)
job=$(launch/slurm/submit.sh configs/tiny.yaml --ntasks-per-node 2 "${long[@]}" --set "run.output_dir=$work/runs/preempt")
for _ in $(seq 1200); do
  d=$(ls -d "$work"/runs/preempt/tiny/*/ 2>/dev/null | head -1)
  [ -n "$d" ] && [ "$(wc -l <"$d/metrics.jsonl" 2>/dev/null)" -ge 60 ] 2>/dev/null && break
  sleep 0.1
done
scancel --batch --signal=USR1 "$job"
out=$(ls "$work"/runs/preempt/tiny/slurm-*.out)
for _ in $(seq 600); do grep -q "requeueing job" "$out" 2>/dev/null && break; sleep 0.2; done
grep -q "requeueing job" "$out" && grep -q "stopped by a signal" "$out" \
  && ok "USR1: every rank checkpointed, exit 3, the job requeued itself" || not_ok "preemption" "$out"
if wait_job "$job" COMPLETED 400; then ok "requeued job $job completed"
else scontrol show job "$job" >"$work/job.txt" 2>&1; not_ok "requeued job" "$out" "$work/job.txt" "$work/slurmctld.log"; fi
grep -q '"resumed"' "$d/meta.json" && grep -q '"status": "completed"' "$d/meta.json" \
  && [ "$(ls -d "$work"/runs/preempt/tiny/*/ | wc -l)" = 1 ] && ok "the same run id continued (resumed entry, completed)" \
  || { scontrol show job "$job" >"$work/job.txt" 2>&1; head -12 "$work/job.txt" >"$work/job12.txt"; not_ok "run record after requeue" "$out" "$work/job12.txt" "$work/slurmctld.log"; }
mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none -np 2 \
  "$LMFORGE" train configs/tiny.yaml "${long[@]}" --set "run.output_dir=$work/runs/reference" >"$work/ref.out" 2>&1
ref=$(ls -d "$work"/runs/reference/tiny/*/ | head -1)
if diff <(series "$ref") <(series "$d") >"$work/diff.out"; then
  ok "resumed loss sequence continues where it stopped: $(series "$d" | wc -l) steps equal an uninterrupted run bit for bit"
else not_ok "loss sequence after the requeue" "$work/diff.out"; fi

# Without PMIx the tasks cannot form one MPI world: every rank says so, exit 2, no hang.
cat >"$work/nopmix.sh" <<SH
#!/usr/bin/env bash
srun --mpi=none "$LMFORGE" train configs/tiny.yaml ${common[*]} --set train.max_steps=5 --set run.output_dir=$work/runs/nopmix
echo "srun exit \$?"
SH
job=$(sbatch --parsable --ntasks=2 --output="$work/nopmix.out" "$work/nopmix.sh")
wait_job "$job" COMPLETED 120 || wait_job "$job" FAILED 5
if [ "$(grep -c 'srun --mpi=pmix' "$work/nopmix.out")" = 2 ] && grep -q "exit 2" "$work/nopmix.out"; then
  ok "srun without PMIx: both ranks explain, exit 2"
else not_ok "srun without PMIx" "$work/nopmix.out"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
