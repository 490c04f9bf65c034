"""Progress bars for the long steps outside Ray's trial table: teacher training, the soft-label
cache and AutoAttack. tqdm, on stderr, with rate and ETA; off when RSLAD_TUNE_PROGRESS=0."""
from __future__ import annotations

import os
import sys

from tqdm import tqdm


def bar(total: int, desc: str, unit: str) -> tqdm:
    return tqdm(total=total, desc=f"[rslad-tune] {desc}", unit=unit, file=sys.stderr, mininterval=1.0,
                dynamic_ncols=True, disable=os.environ.get("RSLAD_TUNE_PROGRESS", "1") == "0")
