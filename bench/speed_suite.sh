#!/usr/bin/env bash
# The speed figures of docs/speed.md and bench/RESULTS.md, in one run: the trainer against the authors' RSLAD loop
# on both pairs (as a trial runs, then each change switched off), and the profiles of both pairs.
#   bash bench/speed_suite.sh OUT_DIR
# Writes one .txt (the printed tables) and one .jsonl (the JSON lines) per command to OUT_DIR, and machine.txt.
# Run it with nothing else on the machine (about 20 minutes on a 2-core CPU): a timing taken while another job
# runs is not a timing.
set -euo pipefail
out="$(realpath -m "${1:?usage: bash bench/speed_suite.sh OUT_DIR}")"
cd "$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
mkdir -p "$out"
{ echo "commit $(git rev-parse --short HEAD), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ), torch $(python -c 'import torch; print(torch.__version__)')"
  grep -m1 "model name" /proc/cpuinfo || true
  grep -o -m1 -w -e avx512_bf16 -e amx_bf16 /proc/cpuinfo | sort -u | tr '\n' ' '; echo; } | tee "$out/machine.txt"

run() {  # run NAME ARGS...: python -m ARGS, tables to NAME.txt, JSON lines to NAME.jsonl
  local name=$1; shift
  echo "== $name: python -m $*" | tee -a "$out/commands.txt"
  python -m "$@" 2>/dev/null | tee "$out/$name.txt" | grep -v '^{' || true
  grep '^{' "$out/$name.txt" > "$out/$name.jsonl" || true
}

run vs_authors bench.vs_authors                                            # as a trial runs (precision auto)
run vs_authors_fp32 bench.vs_authors --precision fp32                      # bf16 autocast off
run vs_authors_no_fold bench.vs_authors --no-fold                          # the attack on the unfolded student
run vs_authors_fp32_no_fold bench.vs_authors --precision fp32 --no-fold    # both off: the trainer before them
run vs_authors_bf16_grouped bench.vs_authors --pairs mobilenet --bf16-grouped  # depthwise convolutions in bf16 too
run vs_authors_1_thread bench.vs_authors --threads 1                       # one intra-op thread (a sweep's trial)
for pair in cnn mobilenet; do
  run "profile_${pair}_before" bench.profile_step --pair $pair --precision fp32 --no-fold
  run "profile_${pair}" bench.profile_step --pair $pair
done
# the soft-label cache on the CNN pair (the CIFAR-shaped pair's table holds 162 crop/flip views per image: minutes)
run profile_cnn_cached bench.profile_step --pair cnn --cached
run profile_cnn_before_cached bench.profile_step --pair cnn --precision fp32 --no-fold --cached
