"""`python -m diagnostics …` — see `diagnostics.cli`."""

import sys

from .cli import main

if __name__ == "__main__":  # a process started by `live` imports the main module again
    sys.exit(main())
