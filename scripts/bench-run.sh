#!/usr/bin/env bash
# Side-by-side benchmark of `martelli run` against xargs, GNU parallel and rust-parallel.
#
#   scripts/bench-run.sh            # 5 interleaved rounds of 2,000 jobs per workload
#   ROUNDS=9 COUNT=2000 scripts/bench-run.sh
#   MARTELLI_BASE=/path/to/older/martelli scripts/bench-run.sh   # A/B: adds its rows, same rounds
#
# Workloads, at -j2 with stdout to /dev/null: 2,000 jobs of `true {}`, 2,000 jobs of
# `sh -c 'echo {}'`, and 2,000 jobs of `echo {}` (GNU parallel's most common example; `true` and
# `echo` are shell builtins, which rust-parallel and xargs run as programs, without a shell).
# Runs are interleaved (A B C D A B C D ...) so that a change in the machine's
# load hits every tool alike. Reports the median wall time, jobs/s, and CPU ms per job (user+sys,
# children included, from GNU time), with ratios. The floor is `spawn_floor`, a few lines of
# std::process::Command running the same command (fork/exec/wait, nothing else).
#
# Also: the start-up latency of one job (median of 21 interleaved runs, beside two floors), and
# whether `--timeout 1` on `sh -c 'sleep 60 | cat'` leaves a process behind.
#
# Peers: GNU parallel is installed with apt-get when missing (needs root); rust-parallel is
# installed with `cargo install rust-parallel` when missing (a few minutes of compiling; give up
# after 15; INSTALL_RUST_PARALLEL=0 skips it). A peer that is missing is reported, never faked.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
COUNT=${COUNT:-2000}
JOBS=2
cd "$(dirname "$0")/.."

if ! command -v parallel >/dev/null; then
    (apt-get install -y parallel || (apt-get update && apt-get install -y parallel)) >/dev/null 2>&1 \
        || echo "note: could not install GNU parallel; its rows are skipped" >&2
fi
PATH="$PATH:$HOME/.cargo/bin"
if ! command -v rust-parallel >/dev/null && [ "${INSTALL_RUST_PARALLEL:-1}" = 1 ]; then
    echo "installing rust-parallel with cargo install (INSTALL_RUST_PARALLEL=0 skips it)" >&2
    timeout 900 cargo install --quiet rust-parallel >/dev/null 2>&1 \
        || echo "note: cargo install rust-parallel failed or took too long; its rows are skipped" >&2
fi
[ -x /usr/bin/time ] || { echo "GNU time (/usr/bin/time) is needed: apt-get install time" >&2; exit 1; }

cargo build --release -q -p martelli-cli --bin martelli --example spawn_floor
. scripts/target-dir.sh
MARTELLI=$TARGET_DIR/release/martelli
FLOOR=$TARGET_DIR/release/examples/spawn_floor
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
seq "$COUNT" > "$WORK/input"

HAVE_PARALLEL=0; command -v parallel >/dev/null && HAVE_PARALLEL=1
HAVE_RP=0; command -v rust-parallel >/dev/null && HAVE_RP=1

# Tools per workload: name|command (run by bash, stdin is the input file).
tools_true=(
    "floor (sh -c)|$FLOOR $JOBS $COUNT 'true {}'"
    "floor (exec)|$FLOOR $JOBS $COUNT --argv true {}"
    "martelli run|$MARTELLI run -j$JOBS 'true {}'"
    "martelli run --no-shell|$MARTELLI run -j$JOBS --no-shell true {}"
    "xargs -P2 -n1|xargs -P$JOBS -n1 true"
)
tools_echo=(
    "floor (sh -c)|$FLOOR $JOBS $COUNT \"sh -c 'echo {}'\""
    "floor (exec)|$FLOOR $JOBS $COUNT --argv sh -c 'echo {}'"
    "martelli run|$MARTELLI run -j$JOBS \"sh -c 'echo {}'\""
    "martelli run --no-shell|$MARTELLI run -j$JOBS --no-shell sh -c 'echo {}'"
    "xargs -P2 -n1|xargs -P$JOBS -I{} sh -c 'echo {}'"
)
tools_builtin=(
    "floor (sh -c)|$FLOOR $JOBS $COUNT 'echo {}'"
    "floor (exec)|$FLOOR $JOBS $COUNT --argv echo {}"
    "martelli run|$MARTELLI run -j$JOBS 'echo {}'"
    "martelli run --no-shell|$MARTELLI run -j$JOBS --no-shell echo {}"
    "xargs -P2 -n1|xargs -P$JOBS -n1 echo"
)
if [ -n "${MARTELLI_BASE:-}" ]; then
    tools_true+=("martelli run (base)|$MARTELLI_BASE run -j$JOBS 'true {}'")
    tools_echo+=("martelli run (base)|$MARTELLI_BASE run -j$JOBS \"sh -c 'echo {}'\"")
    tools_builtin+=("martelli run (base)|$MARTELLI_BASE run -j$JOBS 'echo {}'")
fi
if [ $HAVE_PARALLEL = 1 ]; then
    tools_true+=("GNU parallel|parallel --will-cite -j$JOBS 'true {}'")
    tools_echo+=("GNU parallel|parallel --will-cite -j$JOBS \"sh -c 'echo {}'\"")
    tools_builtin+=("GNU parallel|parallel --will-cite -j$JOBS 'echo {}'")
fi
if [ $HAVE_RP = 1 ]; then
    tools_true+=("rust-parallel|rust-parallel -j$JOBS -r '.*' true {}")
    tools_echo+=("rust-parallel|rust-parallel -j$JOBS -r '.*' sh -c 'echo {}'")
    tools_builtin+=("rust-parallel|rust-parallel -j$JOBS -r '.*' echo {}")
fi

measure() { # workload name command
    local out="$WORK/$1.$(echo "$2" | tr -c 'a-zA-Z0-9' _)"
    /usr/bin/time -f "%e %U %S" -o "$WORK/t" bash -c "$3" < "$WORK/input" > /dev/null
    cat "$WORK/t" >> "$out"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

report() { # workload, tools...
    local workload=$1; shift
    local -A wall cpu
    for t in "$@"; do
        local name=${t%%|*}
        local f="$WORK/$workload.$(echo "$name" | tr -c 'a-zA-Z0-9' _)"
        wall[$name]=$(awk '{print $1}' "$f" | median)
        cpu[$name]=$(awk '{print $2+$3}' "$f" | median)
    done
    local xw=${wall["xargs -P2 -n1"]} fc=${cpu["floor (sh -c)"]} fe=${cpu["floor (exec)"]}
    local rw=${wall["rust-parallel"]:-} pw=${wall["GNU parallel"]:-}
    printf '\n### %s (%s jobs, -j%s, %s interleaved rounds, medians)\n\n' "$workload" "$COUNT" "$JOBS" "$ROUNDS"
    printf '| tool | wall s | jobs/s | CPU ms/job | wall vs xargs | wall vs rust-parallel | GNU parallel wall / this | CPU vs floor (sh -c) | CPU vs floor (exec) |\n'
    printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
    for t in "$@"; do
        local name=${t%%|*} w=${wall[${t%%|*}]} c=${cpu[${t%%|*}]}
        awk -v n="$name" -v w="$w" -v c="$c" -v xw="$xw" -v rw="$rw" -v pw="$pw" -v fc="$fc" -v fe="$fe" -v count="$COUNT" 'BEGIN {
            printf "| %s | %.2f | %.0f | %.3f | %.2fx | %s | %s | %.2fx | %.2fx |\n", n, w, count / w, c * 1000 / count, w / xw,
                (rw == "" ? "n/a" : sprintf("%.2fx", w / rw)), (pw == "" ? "n/a" : sprintf("%.1fx", pw / w)), c / fc, c / fe
        }'
    done
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tools: $($MARTELLI --version), $(xargs --version | head -1)$( [ $HAVE_PARALLEL = 1 ] && echo ", $(parallel --version | head -1)")$( [ $HAVE_RP = 1 ] && echo ", $(rust-parallel --version)")"
[ $HAVE_PARALLEL = 1 ] || echo "GNU parallel: not installed, skipped"
[ $HAVE_RP = 1 ] || echo "rust-parallel: not installed, skipped"

for round in $(seq "$ROUNDS"); do
    for t in "${tools_true[@]}"; do measure "true" "${t%%|*}" "${t#*|}"; done
    for t in "${tools_echo[@]}"; do measure "echo" "${t%%|*}" "${t#*|}"; done
    for t in "${tools_builtin[@]}"; do measure "echo-builtin" "${t%%|*}" "${t#*|}"; done
    echo "round $round of $ROUNDS done" >&2
done
report "true" "${tools_true[@]}"
report "echo" "${tools_echo[@]}"
report "echo-builtin" "${tools_builtin[@]}"

# Start-up latency of a single job: each command run 21 times, the commands interleaved run by run
# (A B C … A B C …) so that a change in the machine's load hits them alike; medians in ms. Every
# sample is `bash -c COMMAND` timed from the outside, so `bash -c true` is this method's floor;
# `spawn_floor 1 1` is the floor of any runner written in Rust: a minimal program that spawns one
# `true` with std::process::Command and waits for it.
LAT_NAMES=(); LAT_CMDS=()
lat() { LAT_NAMES+=("$1"); LAT_CMDS+=("$2"); }
lat 'bash -c true (the floor of this measurement)' 'true'
lat 'spawn_floor 1 1 (a minimal Rust program that spawns one `true`)' "$FLOOR 1 1 --argv true 1"
lat 'martelli run' "$MARTELLI run true ::: 1"
[ -n "${MARTELLI_BASE:-}" ] && lat 'martelli run (base)' "$MARTELLI_BASE run true ::: 1"
lat 'xargs' 'echo 1 | xargs true'
[ $HAVE_PARALLEL = 1 ] && lat 'GNU parallel' 'parallel --will-cite true ::: 1'
[ $HAVE_RP = 1 ] && lat 'rust-parallel' 'rust-parallel true ::: 1'
for _ in $(seq 21); do
    for k in "${!LAT_CMDS[@]}"; do
        a=$(date +%s%N); bash -c "${LAT_CMDS[$k]}" > /dev/null; b=$(date +%s%N)
        echo $(( (b - a) / 1000 )) >> "$WORK/lat.$k"
    done
done
printf '\n### start-up latency of one job (`true`), median of 21 interleaved runs\n\n| tool | ms |\n| --- | ---: |\n'
for k in "${!LAT_CMDS[@]}"; do
    printf '| %s | %s |\n' "${LAT_NAMES[$k]}" "$(median < "$WORK/lat.$k" | awk '{printf "%.2f", $1 / 1000}')"
done

# Correctness: --timeout 1 on `sh -c 'sleep 60 | cat'`; is a process left behind?
leftover() { # unique sleep duration, command
    bash -c "$2" > /dev/null 2>&1 || true
    sleep 0.5
    local pids
    pids=$(pgrep -x -f "sleep $1" || true)
    local live=""
    for p in $pids; do
        [ "$(ps -o stat= -p "$p" 2>/dev/null | cut -c1)" = Z ] || live="$live $p"
    done
    if [ -n "$live" ]; then
        echo "yes (sleep still running)"
        kill $live 2>/dev/null || true
    else
        echo "no"
    fi
}
printf '\n### `--timeout 1` on `sh -c '"'"'sleep 60 | cat'"'"'`: process left behind?\n\n| tool | left behind |\n| --- | --- |\n'
printf '| martelli run | %s |\n' "$(leftover 60.11 "$MARTELLI run --timeout 1 \"sh -c 'sleep 60.11 | cat'\" ::: 1")"
[ $HAVE_PARALLEL = 1 ] && printf '| GNU parallel | %s |\n' "$(leftover 60.12 "parallel --will-cite --timeout 1 \"sh -c 'sleep 60.12 | cat'\" ::: 1")"
[ $HAVE_RP = 1 ] && printf '| rust-parallel | %s |\n' "$(leftover 60.13 "rust-parallel -t 1 sh -c 'sleep 60.13 | cat' ::: 1")"
exit 0
