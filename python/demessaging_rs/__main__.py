"""``python -m demessaging_rs`` = the ``demessaging-rs`` console script."""

import sys

from demessaging_rs.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
