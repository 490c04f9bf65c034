#!/usr/bin/env bash
# Bit-identity of `rslad-tune train` across commits: trains the fixed trials of bench/identity/*.yaml (fp32, CPU) from
# a clean clone of COMMIT and writes the SHA-256 of every weights file each writes to bench/identity/<commit>.txt.
#   COMMIT=efdd995 bash bench/identity/run.sh && COMMIT=HEAD bash bench/identity/run.sh
#   diff bench/identity/efdd995.txt bench/identity/<new>.txt     # no output: the same weights, byte for byte
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
commit="$(git -C "$repo" rev-parse --short "${COMMIT:-HEAD}")"
clone="$(mktemp -d /tmp/identity.XXXXXX)"
git clone -q "$repo" "$clone" && git -C "$clone" checkout -q "$commit"
cd "$clone"
out="$repo/bench/identity/$commit.txt"; : > "$out"
run() {  # space teacher
  PYTHONPATH="$clone" python -m rslad_tune.cli train --space "$repo/bench/identity/$1.yaml" --set teacher="$2" \
    --runs-dir "$clone/runs" --out "$clone/out/$1-$2" --force > "$clone/$1-$2.log" 2>&1 || { cat "$clone/$1-$2.log"; exit 1; }
  (cd "$clone/out/$1-$2" && find . -name '*.safetensors' | sort | xargs sha256sum | sed "s|  \./|  $1-$2/|") >> "$out"
}
for t in t sat16; do run all_labels $t; done
for t in t zoo16 pseudo none; do run few_labels $t; done
cat "$out"
