"""gpuconv: 3D segmentation volumes (NRRD, 3D Slicer .seg.nrrd) -> YOLO datasets and statistics.

reading (nrrdio) -> backend (backends: cpu | gpu) -> writers -> orchestration (pipeline, cli).
"""

__version__ = "0.1.0"


def convert(*args, **kwargs):
    """See :func:`gpuconv.conversion.pipeline.convert` (imported lazily so ``import gpuconv`` is cheap)."""
    from gpuconv.conversion.pipeline import convert as _convert
    return _convert(*args, **kwargs)


__all__ = ["convert", "__version__"]
