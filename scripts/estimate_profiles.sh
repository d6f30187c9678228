#!/usr/bin/env bash
# The shipped roofline estimates (sim/data/profiles/{h100,a100,l4}-*, kind estimate), rebuilt with the
# current roofline (sim/profiles/roofline.py). ResNet-50 off the H100 is the measured H100 profile scaled by
# the roofline ratio; the rest are the roofline times the shape of the matching cpu-*-fp32 profile.
#   scripts/estimate_profiles.sh
set -euo pipefail
OUT=$(cd "$(dirname "$0")/.." && pwd)/sim/data/profiles
CAPSIM=${CAPSIM:-capsim}
SIZES=1,2,4,8,16,32,64,128
for gpu in H100-SXM:h100 A100-80GB:a100 L4:l4; do
  key=${gpu%%:*} prefix=${gpu##*:}
  "$CAPSIM" profile estimate --model mlp --gpu "$key" --batch-sizes "$SIZES,256" --out "$OUT/$prefix-mlp-fp16.json"
  for model in bert-base decoder; do
    "$CAPSIM" profile estimate --model "$model" --gpu "$key" --batch-sizes "$SIZES" --out "$OUT/$prefix-$model-fp16.json"
  done
  if [ "$prefix" != h100 ]; then
    "$CAPSIM" profile estimate --model resnet50 --gpu "$key" --batch-sizes "$SIZES" --source h100-resnet50-fp16 \
      --out "$OUT/$prefix-resnet50-fp16.json"
  fi
done
