"""`python -m bench`: run every benchmark and write the JSON report."""

from .run import main

main()
