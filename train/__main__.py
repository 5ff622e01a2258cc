"""`python -m train <command> ...`, the same as the `thinkrl` script; `python -m train --config X.yaml [key.sub=value
...]` (no command) trains, as the launchers run it."""

import sys

from train.cli import main

sys.exit(main())
