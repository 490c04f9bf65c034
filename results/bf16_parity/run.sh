#!/usr/bin/env bash
# fp32 and bf16 students, the same seed in both (search_spaces/bf16_parity.yaml), trained from a clean clone of
# COMMIT: a run imports the code it finds when it starts, never a working tree being edited. Each writes
# results/bf16_parity/<precision>-seed<S>/ (test_metrics.json: PGD-20 and clean on the 10,000 test images).
#   COMMIT=11106bc SEEDS="4 5 6 7 8" bash results/bf16_parity/run.sh
# (README.md here: which seeds ran at which commit, and the check that those commits train bit-identical weights.)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
commit="${COMMIT:-$(git -C "$repo" rev-parse --short HEAD)}"
clone="$(mktemp -d /tmp/bf16-parity.XXXXXX)"
git clone -q "$repo" "$clone" && git -C "$clone" checkout -q "$commit"
echo "seeds ${SEEDS:-1 2 3 4 5 6 7 8}: $commit" >> "$repo/results/bf16_parity/commit.txt"
cd "$clone"
for s in ${SEEDS:-1 2 3 4 5 6 7 8}; do
  for p in fp32 bf16; do
    out="$repo/results/bf16_parity/$p-seed$s"
    [ -f "$out/test_metrics.json" ] && continue
    PYTHONPATH="$clone" /usr/bin/time -f "$p seed $s: %e s" python -m rslad_tune.cli train \
      --space search_spaces/bf16_parity.yaml --set seed=$s --set precision=$p --out "$out" --force
  done
done
