#!/usr/bin/env python
"""Seed 004 recipe `selective_neural_competition` (see sae_lens_ortho.presets and docs/methods.md).

python examples/selective_neural_competition.py --out runs/selective_neural_competition            # the paper's model and data (GPU + Hub)
python examples/selective_neural_competition.py --offline --out /tmp/selective_neural_competition  # tiny local model, no download
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import main  # noqa: E402

from sae_lens_ortho.presets import selective_neural_competition  # noqa: E402

if __name__ == "__main__":
    main(selective_neural_competition)
