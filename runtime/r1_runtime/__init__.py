"""r1-runtime: the inference runtime each DeepSeekDeployment pod runs."""

import os

# NOTE: torch puts CPU allocations of 2 MiB and more in transparent huge pages when this is set,
# and reads it once, at its first allocation: set here, before any module of ours imports torch.
# A CPU decode step streams every weight once, and with 4 KiB pages it also walks a page table
# entry per 4 KiB (~5% of a step on the benchmark model). THP_MEM_ALLOC_ENABLE=0 opts out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
