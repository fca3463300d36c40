"""`python -m bench`: run every benchmark and write the JSON report."""

from .run import main

if __name__ == "__main__":  # P7's run processes import the main module again (multiprocessing's forkserver)
    main()
