#!/usr/bin/env bash
# Re-times every wall time that README.md and docs/ quote, with hyperfine, on a fresh clone of this repository.
#   bash bench/timings.sh OUT_DIR [quickstart|rank|teacher|all]
# Clones HEAD to a temporary folder, installs nothing (the clone runs through PYTHONPATH with the installed
# dependencies), and writes one hyperfine JSON per figure plus the last run's output to OUT_DIR
# (docs/timings/<commit>/ in the repository). Run it with nothing else on the machine: a timing taken while
# another job runs is not a timing. Each run starts from an empty runs/ folder and an empty soft-label/teacher cache.
set -euo pipefail
out="$(realpath -m "${1:?usage: bash bench/timings.sh OUT_DIR [quickstart|rank|teacher|all]}")"
what="${2:-all}"
repo="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
commit="$(git -C "$repo" rev-parse --short HEAD)"
clone="$(mktemp -d /tmp/rslad-timing.XXXXXX)"
cache="$clone.cache"
git clone -q "$repo" "$clone"
mkdir -p "$out"
echo "commit $commit, clone $clone, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)" | tee "$out/machine.txt"
grep -m1 "model name" /proc/cpuinfo | tee -a "$out/machine.txt" || true
export PYTHONPATH="$clone" RSLAD_TUNE_CACHE="$cache"
fresh="rm -rf $clone/runs $cache"
cd "$clone"

if [[ $what == quickstart || $what == all ]]; then  # the README's first command, after its installs
  hyperfine --runs 3 --warmup 0 --prepare "$fresh" --output "$out/quickstart-last-run.log" \
    --export-json "$out/quickstart.json" -n quickstart \
    "python -m rslad_tune.cli --space search_spaces/quickstart.yaml"
  cp "$clone/runs/quickstart/selection.md" "$out/quickstart-selection.txt"  # the last run's report
fi
if [[ $what == rank || $what == all ]]; then  # the proxies cached on the shipped cards, then all computed
  hyperfine --runs 3 --warmup 0 --prepare "$fresh" --output "$out/rank-last-run.log" \
    --export-json "$out/rank-cached.json" -n "teachers rank (cached proxies)" \
    "python -m rslad_tune.cli teachers rank --space search_spaces/teacher.yaml"
  hyperfine --runs 2 --warmup 0 \
    --prepare "$fresh; git -C $clone checkout -q -- rslad_tune/teacher_zoo; python -m bench.strip_proxies $clone/rslad_tune/teacher_zoo" \
    --export-json "$out/rank-computed.json" -n "teachers rank (every proxy computed)" \
    "python -m rslad_tune.cli teachers rank --space search_spaces/teacher.yaml"
  git -C "$clone" checkout -q -- rslad_tune/teacher_zoo
fi
if [[ $what == teacher || $what == all ]]; then  # the real job: six zoo teachers and the baseline
  hyperfine --runs 1 --warmup 0 --prepare "$fresh" --output "$out/teacher-last-run.log" \
    --export-json "$out/teacher.json" -n teacher.yaml \
    "python -m rslad_tune.cli --space search_spaces/teacher.yaml"
  cp "$clone/runs/teacher/selection.md" "$out/teacher-selection.txt"
fi
echo "wrote $out"
