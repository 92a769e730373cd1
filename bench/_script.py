"""Lets a script in bench/ import the :mod:`bench` package it belongs to.

``python bench/<script>.py`` searches bench/ itself for modules, not the repository root, so
``import bench`` would find nothing (or the script ``bench.py``). :func:`load_package` registers the
package from its folder instead; the module search path, and so which ``cut_hf`` is imported, stay as they are.
"""

import importlib.util
import sys
from pathlib import Path


def load_package() -> None:
    """Import bench/ as the package ``bench`` (once)."""
    if "bench" in sys.modules and hasattr(sys.modules["bench"], "__path__"):
        return
    here = Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location("bench", here / "__init__.py", submodule_search_locations=[str(here)])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the bench package from {here}")
    package = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = package
    spec.loader.exec_module(package)
