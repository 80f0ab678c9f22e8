#!/usr/bin/env python
"""Seed 001 recipe `adaptive_ortho` (see sae_lens_ortho.presets and docs/methods.md).

python examples/adaptive_ortho.py --out runs/adaptive_ortho            # the paper's model and data (GPU + Hub)
python examples/adaptive_ortho.py --offline --out /tmp/adaptive_ortho  # tiny local model, no download
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import main  # noqa: E402

from sae_lens_ortho.presets import adaptive_ortho  # noqa: E402

if __name__ == "__main__":
    main(adaptive_ortho)
