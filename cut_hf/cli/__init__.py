"""Command-line mains (argparse), one module per ``cut-hf <command>`` (:mod:`cut_hf.__main__` dispatches)."""
