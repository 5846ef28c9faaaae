#!/usr/bin/env bash
# The instruction-count guard: counts the instructions martelli's hot paths execute per item, under
# valgrind's callgrind (which counts instructions exactly, whatever the machine's load), and fails
# when a count has grown more than 10 % over the figure recorded in scripts/inscount-baseline.txt.
# Wall-clock ratios stay in the bench-*.sh scripts; this is the check that noise cannot fool.
#
#   bash scripts/inscount.sh               # measure and compare with the baseline
#   bash scripts/inscount.sh --update      # measure and write the baseline (commit it with the reason)
#   bash scripts/inscount.sh --self-check  # show that the guard fails on a deliberately slowed build
#
# Each case of crates/martelli-bench/src/bin/inscount.rs runs at two sizes; the difference of the two
# counts divided by the difference of the sizes is the count per item, with pool start-up and warm-up
# cancelled out. Each size runs three times and the median is taken (idle workers spin a little
# before they sleep, which moves a count by a few per mille between runs). Only the calling process
# is counted (the process case counts the parent's side of a round trip).
#
# --self-check builds the library with MARTELLI_INSCOUNT_SLOWDOWN set, which makes every thread-pool
# submission do extra work (a compile-time setting; builds without it contain no trace of it), and
# requires the guard to fail on the submit case. The next ordinary build rebuilds the library as usual.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

LIMIT_PERCENT=10
BASELINE=scripts/inscount-baseline.txt
# case  small-n  large-n
CASES=(
  "submit 10000 30000"
  "map 100000 300000"
  "map-slice 200000 600000"
  "queue 20000 60000"
  "process 300 900"
)

mode=check
case ${1:-} in
  "") ;;
  --update) mode=update ;;
  --self-check) mode=self-check ;;
  *)
    echo "usage: $0 [--update | --self-check]" >&2
    exit 2
    ;;
esac

command -v valgrind >/dev/null || {
  echo "inscount: valgrind is not installed (Debian: apt-get install valgrind)" >&2
  exit 1
}

. scripts/target-dir.sh
BIN=$TARGET_DIR/release/inscount
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build() {
  cargo build --quiet --release --locked -p martelli-bench --bin inscount
}

# count CASE N: the instructions one run executes (every thread of the process), median of three.
count() {
  local runs=()
  for rep in 1 2 3; do
    local out=$work/cg.$1.$2.$rep
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" "$1" "$2" \
      >"$work/log" 2>&1 || {
      cat "$work/log" >&2
      echo "inscount: the case $1 ($2 items) failed under valgrind" >&2
      exit 1
    }
    runs+=("$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$out")")
  done
  printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p
}

# per_item CASE SMALL LARGE: instructions per item.
per_item() {
  local small large
  small=$(count "$1" "$2")
  [ -n "$small" ] || exit 1
  large=$(count "$1" "$3")
  awk -v s="$small" -v l="$large" -v a="$2" -v b="$3" 'BEGIN { printf "%.1f\n", (l - s) / (b - a) }'

}

# measure [CASE...]: prints "case per-item" lines for the given cases (all without arguments).
measure() {
  local spec name small large
  for spec in "${CASES[@]}"; do
    read -r name small large <<<"$spec"
    if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
    local figure
    figure=$(per_item "$name" "$small" "$large")
    echo "$name $figure"
  done
}

# compare FILE: compares measured figures with the baseline; returns 1 if any grew past the limit.
compare() {
  awk -v limit="$LIMIT_PERCENT" '
    NR == FNR { if ($1 !~ /^#/) base[$1] = $2; next }
    FNR == 1 { printf "%-10s %12s %12s %8s\n", "case", "baseline", "now", "change" }
    {
      if (!($1 in base)) { printf "%-10s %12s %12.1f  (no baseline: run --update)\n", $1, "-", $2; failed = 1; next }
      change = ($2 - base[$1]) * 100 / base[$1]
      printf "%-10s %12.1f %12.1f %+7.1f%%", $1, base[$1], $2, change
      if (change > limit) { printf "   GREW more than %d %%\n", limit; failed = 1 }
      else if (change < -limit) printf "   (fell more than %d %%: record it with --update)\n", limit
      else printf "\n"
    }
    END { exit failed }
  ' "$BASELINE" "$1"
}

case $mode in
  update)
    build
    {
      echo "# Instructions per item of each case of scripts/inscount.sh (callgrind), written by"
      echo "# 'bash scripts/inscount.sh --update'. The guard fails when a figure grows more than $LIMIT_PERCENT %."
      measure
    } >"$work/new"
    mv "$work/new" "$BASELINE"
    cat "$BASELINE"
    ;;
  check)
    build
    measure >"$work/now"
    [ -s "$work/now" ] || exit 1
    if compare "$work/now"; then
      echo "inscount: ok: no hot path grew more than $LIMIT_PERCENT % in instructions per item"
    else
      echo "inscount: FAILED: a hot path executes more instructions per item than $BASELINE records." >&2
      echo "Find the change that added them (callgrind_annotate on a run of $BIN), or, if the" >&2
      echo "growth is meant, record the new figures with 'bash scripts/inscount.sh --update'." >&2
      exit 1
    fi
    ;;
  self-check)
    MARTELLI_INSCOUNT_SLOWDOWN=1 build
    measure submit >"$work/now"
    if compare "$work/now"; then
      echo "inscount --self-check: FAILED: the guard passed a build slowed on purpose" >&2
      exit 1
    fi
    echo "inscount --self-check: ok: the guard failed on the build slowed on purpose, as it must"
    ;;
esac
