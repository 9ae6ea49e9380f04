"""Reading and writing volumes: NRRD / 3D Slicer .seg.nrrd (headers with limits, bounded
decode), NIfTI, DICOM-SEG and DICOM CT series behind one seam (``formats.py``), the inspect
table, and the writers for synthetic corpora."""
