"""The dtypes the lab's commands take (``--dtype``), by name: one table for the benchmark's byte
sizes, the fixed-budget model, the recipes' dtype check and the low-precision tests."""

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # by CLI name
