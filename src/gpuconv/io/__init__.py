"""Reading and writing volumes: NRRD (and 3D Slicer .seg.nrrd) headers, payload decoding, the inspect table."""
