"""`sparsify-worker` with its GPU memory capped at $GPU_MEMORY_CAP_GB, so a real CUDA
out-of-memory error happens at a small batch (the tests' data has fewer images than the
batch a 140 GB GPU would need to run out)."""

import os
import sys

import torch

from sparsify_worker.cli import main

if __name__ == "__main__":
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, float(os.environ["GPU_MEMORY_CAP_GB"]) * 1e9 / total), 0)
    sys.exit(main(sys.argv[1:]))
