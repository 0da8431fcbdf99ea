"""napari-brainage: interpretable brain-age estimation in napari.

The core (``io``, ``geometry`` and the modules that follow) imports neither Qt
nor napari, so every function can be used from scripts and the CLI as well as
from the widgets.
"""

__version__ = "0.1.0"
