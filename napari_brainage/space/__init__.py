"""Spaces and grids: the MNI template, the model's grid, registration onto it, and
the display layout napari shows scans in.

* ``template``: the bundled ICBM152 template kit (T1, tissue maps, atlas) on FSL's
  1 and 2 mm MNI grids.
* ``grid``: resampling, the model's crop, the brain mask, the model's input.
* ``registration``: a scan registered to the template (SimpleITK) and resampled
  onto its grid.
* ``display``: voxel axes reordered (without resampling) for napari, and back.
"""
