"""Robustness benchmark: the same as ``isfl benchmark robustness`` (see napari_isfl.evaluation.robustness).

Examples::

    # 2D, Harvard dev pairs (no montages: the Harvard images have no open licence)
    python benchmarks/robustness.py ../shared/data/harvard/dev \
        --baseline-model runs/final/isfl2d_no_interventions/model.pt \
        --no-montages --output docs/benchmarks/robustness_2d
    # a few minutes
    python benchmarks/robustness.py ../shared/data/harvard/dev --quick --output /tmp/robustness_quick
"""

from __future__ import annotations

import sys

from napari_isfl.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", "robustness", *sys.argv[1:]]))
