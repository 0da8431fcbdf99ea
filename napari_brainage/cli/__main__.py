"""``python -m napari_brainage.cli``: the same as the ``napari-brainage`` command."""

import sys

from ..cli import main

sys.exit(main())
