#!/usr/bin/env bash
# Compile cost of the headers: CPU seconds (user + system) of the compiler on the one-line files
# of benchmarks/include_cost/, each compiled RUNS times in turn (median reported), in one run so
# that the ratios compare like with like on a shared machine.
#   benchmarks/include_cost.sh [RUNS]     (CXX, default g++; run from anywhere)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-5}
cxx=${CXX:-g++}
eigen=$(pkg-config --cflags eigen3 2>/dev/null || echo -I/usr/include/eigen3)
flags=(-std=c++17 -I"$root/include" $eigen)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo '#include <loftq/src.hpp>' > "$out/src.cpp"

cases=(
  "Eigen/Dense, syntax only|-fsyntax-only $root/benchmarks/include_cost/eigen_dense.cpp"
  "loftq/loftq.hpp, syntax only|-fsyntax-only $root/benchmarks/include_cost/loftq_header.cpp"
  "one loftq() call, -O2, header-only|-O2 -march=native -fopenmp -c $root/benchmarks/include_cost/loftq_call.cpp -o $out/call.o"
  "one loftq() call, -O2, LOFTQ_SEPARATE_COMPILATION|-O2 -march=native -fopenmp -DLOFTQ_SEPARATE_COMPILATION -c $root/benchmarks/include_cost/loftq_call.cpp -o $out/call_separate.o"
  "<loftq/src.hpp> (compiled once), -O2|-O2 -march=native -fopenmp -DLOFTQ_SEPARATE_COMPILATION -c $out/src.cpp -o $out/src.o"
)
declare -A times
for ((run = 0; run < runs; ++run)); do
  for i in "${!cases[@]}"; do
    args=${cases[$i]#*|}
    /usr/bin/time -o "$out/time" -f "%U %S" "$cxx" "${flags[@]}" $args >/dev/null 2>&1
    seconds=$(awk '{print $1 + $2}' "$out/time")
    times[$i]+="$seconds "
  done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
base=$(median "${times[0]}")
echo "| file | CPU seconds (median of $runs) | ratio to Eigen/Dense |"
echo "|---|---|---|"
for i in "${!cases[@]}"; do
  m=$(median "${times[$i]}")
  printf '| %s | %.2f | %.1f |\n' "${cases[$i]%%|*}" "$m" "$(awk -v a="$m" -v b="$base" 'BEGIN {print a / b}')"
done
