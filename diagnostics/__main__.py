"""`python -m diagnostics …` — see `diagnostics.cli`."""

import sys

from .cli import main

sys.exit(main())
