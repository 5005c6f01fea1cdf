"""`python -m harness ...` is the `harness` command; torchrun launches it this way.

torchrun --standalone --nproc-per-node 2 -m harness train sweeps/runs/tiny.yaml train.parallel=fsdp
"""

import sys

from harness.cli import main

sys.exit(main())
