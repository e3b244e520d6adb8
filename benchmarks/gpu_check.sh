#!/usr/bin/env bash
# Train and time the global Transformer (and the size table) on a CUDA GPU, bf16 autocast.
#
#   benchmarks/gpu_check.sh           # needs CUDA; writes benchmarks/results/gpu_check_cuda.json
#   benchmarks/gpu_check.sh --cpu     # the same script on CPU, quick settings (a smoke test)
#
# Data: $SEGREC_ML100K, else ../shared/data/ml-100k, else segrec's synthetic data (the
# device machine gets only the repository, so carry ml-100k there or accept synthetic).
# Results go to $OUT (the device tool's output folder) when set, else benchmarks/results.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda
extra=()
for arg in "$@"; do
  case "$arg" in
    --cpu) device=cpu; extra+=(--quick --skip adapt) ;;
    *) extra+=("$arg") ;;
  esac
done

if [ "$device" = cuda ]; then
  if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device here (torch $(python -c 'import torch; print(torch.__version__)')); use --cpu" >&2
    exit 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

data="${SEGREC_ML100K:-../shared/data/ml-100k}"
if [ -f "$data/interactions.csv" ]; then src=(--data "$data"); else src=(--synthetic); fi
outdir="${OUT:-benchmarks/results}"
mkdir -p "$outdir"

start=$(date +%s)
python benchmarks/bench_transformer.py "${src[@]}" --device "$device" --threads "$(nproc)" \
  --sizes 64x2,128x2,256x2,256x4 --out "$outdir/gpu_check_${device}.json" "${extra[@]}" \
  2> >(grep -v " epoch " >&2)
echo "gpu_check: total $(( $(date +%s) - start )) s on $device"
