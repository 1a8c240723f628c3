"""`python -m separation.weights`: see `separation.weights.command`."""

import sys

from .command import main

sys.exit(main())
