#!/usr/bin/env python
"""Seed 002 recipe `selective_decorrelation` (see sae_lens_ortho.presets and docs/methods.md).

python examples/selective_decorrelation.py --out runs/selective_decorrelation            # the paper's model and data (GPU + Hub)
python examples/selective_decorrelation.py --offline --out /tmp/selective_decorrelation  # tiny local model, no download
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import main  # noqa: E402

from sae_lens_ortho.presets import selective_decorrelation  # noqa: E402

if __name__ == "__main__":
    main(selective_decorrelation)
