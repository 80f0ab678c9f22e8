#!/usr/bin/env python
"""Seed 000 recipe `memory_efficient_selective_ortho` (see sae_lens_ortho.presets and docs/methods.md).

python examples/memory_efficient_selective_ortho.py --out runs/memory_efficient_selective_ortho            # the paper's model and data (GPU + Hub)
python examples/memory_efficient_selective_ortho.py --offline --out /tmp/memory_efficient_selective_ortho  # tiny local model, no download
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import main  # noqa: E402

from sae_lens_ortho.presets import memory_efficient_selective_ortho  # noqa: E402

if __name__ == "__main__":
    main(memory_efficient_selective_ortho)
