"""Applies the worker change LMCache's CacheBlend example asks for (examples/blend_kv_v1,
verified with vLLM v0.17.1): register the loaded model with LMCache's model tracker before the
KV connector is initialised, in vllm/v1/worker/gpu_worker.py `initialize_from_config`.

Written for this project from the example's description; fails loudly if the vLLM in the image
does not have the function it expects (i.e. the base image is not the verified version).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import vllm.v1.worker.gpu_worker as target

path = Path(target.__file__)
source = path.read_text()
MARK = "# semcache: CacheBlend model registration"
if MARK in source:
    sys.exit(0)
m = re.search(r"\n(\s+)def initialize_from_config\(self[^)]*\)[^:]*:\n(\s+)(\"\"\"[^\n]*\"\"\"\n)?", source)
if m is None:
    sys.exit(f"{path}: initialize_from_config not found; "
             "this vLLM is not the version CacheBlend was verified with")
indent = m.group(2)
insert = (
    f"{indent}{MARK}\n"
    f"{indent}try:\n"
    f"{indent}    from lmcache.v1.compute.models.utils import VLLMModelTracker\n"
    f"{indent}    VLLMModelTracker.register_model('vllm-instance', self.model_runner.model)\n"
    f"{indent}except ImportError:\n"
    f"{indent}    pass\n"
)
path.write_text(source[: m.end()] + insert + source[m.end() :])
print(f"patched {path}")
