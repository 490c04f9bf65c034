#!/usr/bin/env bash
# fp32 and bf16 students, seeds 1-5, the same seed in both (search_spaces/bf16_parity.yaml); each writes
# results/bf16_parity/<precision>-seed<S>/ (test_metrics.json: PGD-20 and clean on the 10,000 test images).
set -euo pipefail
cd "$(dirname "$0")/../.."
git rev-parse --short HEAD > results/bf16_parity/commit.txt
for s in ${SEEDS:-1 2 3 4 5}; do
  for p in fp32 bf16; do
    out=results/bf16_parity/$p-seed$s
    [ -f "$out/test_metrics.json" ] && continue
    /usr/bin/time -f "$p seed $s: %e s" rslad-tune train --space search_spaces/bf16_parity.yaml \
      --set seed=$s --set precision=$p --out "$out" --force
  done
done
