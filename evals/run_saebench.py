#!/usr/bin/env python
"""Run SAEBench suites on trained SAEs: a thin wrapper around ``sae_lens_ortho.evals.saebench.run.run_saebench``.

The parser and the call live in the package (``sae_lens_ortho.evals.saebench.cli.cli_main``), so
``sae-lens-ortho eval ...`` runs the same code::

    python evals/run_saebench.py runs/abc123/final runs/def456/final \\
        --suites core,sparse_probing,absorption --out eval_out --device cuda

    python evals/run_saebench.py ortho=runs/abc123/final \\
        baseline=gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical \\
        --suites core,scr,tpp --out eval_out --llm-dtype bfloat16

See ``docs/saebench.md`` for installing SAEBench and for which suites to trust.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from sae_lens_ortho.evals.saebench.cli import cli_main

    return cli_main(sys.argv[1:] if argv is None else list(argv), prog="run_saebench.py")


if __name__ == "__main__":
    raise SystemExit(main())
