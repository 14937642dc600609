"""`python -m trainer ...`: the headless CLI (no TUI commands)."""

import sys

from trainer.cli import main

sys.exit(main())
