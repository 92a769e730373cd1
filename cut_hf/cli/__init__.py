"""Command-line mains (argparse). Each ``cut_hf/<name>.py`` shim keeps ``python -m cut_hf.<name>`` working."""
