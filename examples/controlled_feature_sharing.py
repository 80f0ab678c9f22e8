#!/usr/bin/env python
"""Seed 003 recipe `controlled_feature_sharing` (see sae_lens_ortho.presets and docs/methods.md).

python examples/controlled_feature_sharing.py --out runs/controlled_feature_sharing            # the paper's model and data (GPU + Hub)
python examples/controlled_feature_sharing.py --offline --out /tmp/controlled_feature_sharing  # tiny local model, no download
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import main  # noqa: E402

from sae_lens_ortho.presets import controlled_feature_sharing  # noqa: E402

if __name__ == "__main__":
    main(controlled_feature_sharing)
