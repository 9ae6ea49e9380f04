"""gpuconv: 3D segmentations (NRRD, 3D Slicer .seg.nrrd, NIfTI, DICOM-SEG) -> YOLO datasets,
3D instances and clinical numbers.

io (read) -> dataset (plan) -> backends (cpu | gpu) -> results -> writers, run per exam by
conversion; see docs/architecture.md.  ``gpuconv.convert(inputs, out, **settings)`` is the API
(settings: the fields of ``gpuconv.conversion.options.ConvertOptions``).
"""

__version__ = "0.1.0"


def convert(*args, **kwargs):
    """See :func:`gpuconv.conversion.pipeline.convert` (imported lazily: ``import gpuconv`` is
    cheap)."""
    from gpuconv.conversion.pipeline import convert as _convert
    return _convert(*args, **kwargs)


__all__ = ["convert", "__version__"]
