"""``python -m mlkd`` runs the command line (same as the ``mlkd`` console script)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
