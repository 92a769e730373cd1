#!/usr/bin/env python
"""Benchmark CUT training and inference against what this machine's own convolutions reach.

The program is the :mod:`bench` package (``bench/main.py`` says what each section measures); this
script is its documented entry: ``python bench/bench.py --quick``, ``python bench/bench.py --device cuda --quick``.
"""

import sys

if __name__ == "__main__":
    import _script  # bench/_script.py, beside this file

    _script.load_package()
    from bench.main import main

    sys.exit(main())
