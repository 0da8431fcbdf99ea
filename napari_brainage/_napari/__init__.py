"""The napari layer: thin, Qt and napari only here.

Each contribution in ``napari.yaml`` turns user input into one core call and the
result into layers:

* ``reader``, ``writer``, ``sample_data``: npe2 contributions over ``io`` and ``samples``;
* ``layers``: a ``Volume`` as a napari layer (``space.display``'s layout) and back;
* ``viewer``: the camera set up for anatomy (axial, anterior up, neurological);
* ``widgets``: the dock widgets (Brain age, Population, Slices, Threshold,
  Regions, Scan info), each running long work in a worker with progress and Cancel;
* ``demo``: ``napari-brainage demo``.
"""
