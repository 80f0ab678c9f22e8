"""``python tests/synthbench_child.py ARGS``: the synthbench CLI with the tests' tiny scale registered (a child
process for the Ctrl-C test; the worker processes get the scale inside each job)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synth_tiny import TINY  # noqa: E402

from sae_lens_ortho.evals.synthetic import scales  # noqa: E402
from sae_lens_ortho.evals.synthetic.synthbench_cli import main  # noqa: E402

if __name__ == "__main__":
    scales.SCALES["tiny"] = TINY
    raise SystemExit(main(sys.argv[1:]))
