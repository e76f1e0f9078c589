"""Entry point for ``python -m exporter.simulator``."""

import sys

from exporter.simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
