"""Removes the cached proxies from every card.json under a zoo folder, so that `teachers rank` computes them all
(bench/timings.sh times that case on a throw-away clone; never run it on the checkout you ship)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def strip(zoo: Path) -> int:
    n = 0
    for card in sorted(zoo.rglob("card.json")):
        data = json.loads(card.read_text())
        if data.pop("proxies", None) is not None:
            card.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
            n += 1
    return n


if __name__ == "__main__":
    print(f"removed the proxies of {strip(Path(sys.argv[1]))} cards")
