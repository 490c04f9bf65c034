"""`python -m rslad_tune ...` is `rslad-tune ...`."""
import sys

from .cli import main

sys.exit(main())
