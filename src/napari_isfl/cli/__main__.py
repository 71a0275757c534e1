"""``python -m napari_isfl.cli ...``: the ``isfl`` command (used by ``torchrun`` for multi-GPU training)."""

import sys

from . import main

sys.exit(main())
