#!/usr/bin/env bash
# A workflow mixing SQL steps with a Python task step and a Node task step
# (issue 17's acceptance): 40 runs, both workers SIGKILLed while they hold
# tasks, then started again.  Every run completes; each SQL step's effect
# is there once; each task step's result is recorded once (by the worker
# of its language), though handlers may have run more than once.
# Runs inside a cluster whose workers serve PGDATABASE (test/run-all);
# needs clients/node/node_modules.  Prints "test mixed_workers ... ok|FAILED".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/test/integration/lib.sh"
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$WORK"; }
trap cleanup EXIT
result() { echo "test mixed_workers                    ... $1"; }
die() { result FAILED; echo "# $*"; for f in "$WORK"/*.log; do [ -f "$f" ] && tail -5 "$f" | sed "s|^|# $(basename "$f"): |"; done; exit 1; }

cf_wait_ready 60 || die "cluster not ready"
q -c "CREATE EXTENSION IF NOT EXISTS chrono_forge" >/dev/null
q -f - >/dev/null <<'SQL' || die "setup failed"
CREATE TABLE mx_effects (key text, step text);
CREATE FUNCTION mx_mark(step text) RETURNS void LANGUAGE sql AS $$
    INSERT INTO mx_effects SELECT chrono_forge.context()->>'$key', step $$;
CREATE FUNCTION mx_a(args jsonb) RETURNS void LANGUAGE sql AS $$ SELECT mx_mark('a') $$;
CREATE FUNCTION mx_b(args jsonb) RETURNS void LANGUAGE sql AS $$ SELECT mx_mark('b') $$;
CREATE PROCEDURE mx_order(args jsonb) LANGUAGE plpgsql AS $$
DECLARE py jsonb; nd jsonb;
BEGIN
    PERFORM chrono_forge.context_set('$key', args->'key');
    CALL chrono_forge.durably_execute('mx_a');
    CALL chrono_forge.run_task('py_step', 'mx_py', result => py, args => args, lease => '2 seconds',
        retry_policy => chrono_forge.retry_policy(max_attempts => 10, base => '0.2 seconds', cap => '1 second'));
    CALL chrono_forge.run_task('node_step', 'mx_node', result => nd, args => args, lease => '2 seconds',
        retry_policy => chrono_forge.retry_policy(max_attempts => 10, base => '0.2 seconds', cap => '1 second'));
    PERFORM chrono_forge.context_set('py', py);
    PERFORM chrono_forge.context_set('node', nd);
    CALL chrono_forge.durably_execute('mx_b');
END $$;
SQL

cat > "$WORK/worker.py" <<'PY'
import sys, time
from chrono_forge import Task, Worker
worker = Worker("", ["mx_py"], concurrency=8)
@worker.task("py_step")
def py_step(task: Task) -> dict[str, object]:
    with open(sys.argv[1], "a") as f:
        f.write(f"{task.key} {task.attempt}\n")
    time.sleep(0.3)
    return {"by": "python", "key": task.key}
worker.run()
PY
cat > "$WORK/worker.mjs" <<EOF2
import { appendFileSync } from 'node:fs';
import { Worker } from '$ROOT/clients/node/src/index.js';
const worker = new Worker({ queues: ['mx_node'], concurrency: 8, handleSignals: true });
worker.task('node_step', async (task) => {
  appendFileSync(process.argv[2], \`\${task.key} \${task.attempt}\n\`);
  await new Promise((resolve) => setTimeout(resolve, 300));
  return { by: 'node', key: task.key };
});
await worker.start();
EOF2

start_workers() {
    PYTHONPATH="$ROOT/clients/python/src" /usr/bin/python3 "$WORK/worker.py" "$WORK/py.ran" >> "$WORK/python.log" 2>&1 &
    py=$!; pids+=("$py")
    (cd "$ROOT/clients/node" && exec node "$WORK/worker.mjs" "$WORK/node.ran") >> "$WORK/node.log" 2>&1 &
    nd=$!; pids+=("$nd")
}

q -c "SELECT count(chrono_forge.start('mx_order', 'm' || g, jsonb_build_object('key', 'm' || g))) FROM generate_series(1, 40) g" >/dev/null
start_workers
# Kill both while they hold tasks: once each has run some handlers.
wait_for 60 "SELECT count(*) >= 4 FROM chrono_forge.tasks WHERE state = 'claimed' AND queue IN ('mx_py', 'mx_node')" \
    || die "the workers claimed nothing"
sleep 0.2
kill -9 "$py" "$nd"
wait "$py" "$nd" 2>/dev/null
held=$(q -c "SELECT count(*) FROM chrono_forge.tasks WHERE state = 'claimed'")
start_workers
wait_for 120 "SELECT count(*) = 40 FROM chrono_forge.workflows WHERE workflow = 'public.mx_order' AND state = 'completed'" \
    || die "not every run completed: $(q -c "SELECT state, count(*) FROM chrono_forge.workflows GROUP BY 1")"
kill -TERM "$py" "$nd"; wait "$py" "$nd" 2>/dev/null

expect() { [ "$1" = "$2" ] || die "$3: expected $2, got $1"; }
expect "$held" "$held" "tasks held at the kill"
[ "$held" -gt 0 ] || die "no task was held when the workers were killed"
expect "$(q -c "SELECT count(*) FROM mx_effects")" 80 "SQL step effects"
expect "$(q -c "SELECT count(DISTINCT (key, step)) FROM mx_effects")" 80 "distinct SQL step effects"
expect "$(q -c "SELECT count(*) FROM chrono_forge.execution_logs WHERE step_name = 'run_task\$py_step' AND state = 'completed' AND result->>'by' = 'python'")" 40 "python results recorded"
expect "$(q -c "SELECT count(*) FROM chrono_forge.execution_logs WHERE step_name = 'run_task\$node_step' AND state = 'completed' AND result->>'by' = 'node'")" 40 "node results recorded"
expect "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.mx_order' AND context->'py'->>'key' = key AND context->'node'->>'key' = key")" 40 "results in each run's context"
ran=$(cat "$WORK/py.ran" "$WORK/node.ran" | wc -l)
[ "$ran" -ge 80 ] || die "handlers ran $ran times, fewer than the 80 steps"
result ok
echo "# $held tasks held at the kill; handlers ran $ran times for 80 task steps"
