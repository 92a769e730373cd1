"""``python -m cut_hf.translate``: runs :func:`cut_hf.cli.translate.main` (the command line lives there).

Import the command line from :mod:`cut_hf.cli.translate`. Importing this module by name binds
``cut_hf.translate`` to it (Python sets a package attribute for each imported submodule), which
hides the :func:`cut_hf.translate` function; running it with ``-m`` does not.
"""

import sys

from .cli.translate import main

if __name__ == "__main__":
    sys.exit(main())
