from sae_lens_ortho.bench.cli import main

main()
