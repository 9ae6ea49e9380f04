"""The script ASOCA users write to compare two annotations: pynrrd + cKDTree (the challenge's
``evaluation.py`` ``hausdorff_95``, voxel units) and Dice.

    python agree_script.py A.nrrd B.nrrd      # prints {"dice": ..., "hd95": ...}

Standalone (imports nothing from gpuconv), so a whole-process run costs what the user's script
costs.  ``gpuconv agree A B --hd95 asoca_challenge`` reports the same two numbers.
"""

from __future__ import annotations

import json
import sys


def hausdorff_95(submission, groundtruth, np, cKDTree) -> float:
    sub = np.array(np.where(submission > 0.5), dtype=np.uint16).T
    gt = np.array(np.where(groundtruth > 0.5), dtype=np.uint16).T
    d1, _ = cKDTree(sub).query(gt)
    d2, _ = cKDTree(gt).query(sub)
    return float(max(np.quantile(d1, 0.95), np.quantile(d2, 0.95)))


def main(argv=None) -> int:
    import nrrd
    import numpy as np
    from scipy.spatial import cKDTree
    a_path, b_path = (sys.argv[1:] if argv is None else argv)[:2]
    a, _ = nrrd.read(a_path)
    b, _ = nrrd.read(b_path)
    a = a > 0.5
    b = b > 0.5
    dice = 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
    print(json.dumps({"dice": dice, "hd95": hausdorff_95(a, b, np, cKDTree)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
