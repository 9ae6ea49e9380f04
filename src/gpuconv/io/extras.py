"""Optional readers' dependencies, each with a one-line message naming the extra to install.

pydicom (``pip install 'gpuconv[dicom]'``) reads DICOM CT series and DICOM-SEG; nibabel
(``pip install 'gpuconv[nifti]'``) reads and writes NIfTI.  Compressed DICOM pixel data (JPEG,
JPEG-LS, JPEG 2000) also needs pydicom's pixel decoder plugins: ``pip install
'gpuconv[dicom-jpeg]'`` (pylibjpeg with its libjpeg and openjpeg plugins).  RLE Lossless and
deflated transfer syntaxes are decoded by pydicom itself.
"""

from __future__ import annotations

from gpuconv.errors import InputError

_WHAT = {
    "pydicom": ("reading DICOM", "dicom"),
    "nibabel": ("reading NIfTI", "nifti"),
}
JPEG_EXTRA = ("compressed DICOM pixel data needs pydicom's decoder plugins: "
              "pip install 'gpuconv[dicom-jpeg]' (pylibjpeg, pylibjpeg-libjpeg, "
              "pylibjpeg-openjpeg)")


def require(module: str, path=None):
    """Import ``module`` (pydicom or nibabel) or raise a one-line InputError naming the extra."""
    try:
        if module == "pydicom":
            import pydicom
            return pydicom
        if module == "nibabel":
            import nibabel
            return nibabel
    except ImportError:
        what, extra = _WHAT[module]
        raise InputError(f"{what} needs {module}: pip install 'gpuconv[{extra}]'", path) from None
    raise ValueError(module)
