"""``python -m bench``: the same program as ``python bench/bench.py``."""

import sys

from bench.main import main

sys.exit(main())
