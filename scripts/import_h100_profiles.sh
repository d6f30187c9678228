#!/usr/bin/env bash
# The shipped measured H100 profiles (sim/data/profiles/h100-resnet50-fp16, h100-bert-encoder-fp16,
# h100-mlp-2048-fp32), rebuilt from the H100 measurement files of a plain torch loop (docs/gpu.md):
#   scripts/import_h100_profiles.sh tests/data/recordings/h100
set -euo pipefail
DATA=${1:?usage: scripts/import_h100_profiles.sh DATA_DIR (holding profile_h100_*.json and coldstart.json)}
OUT=$(cd "$(dirname "$0")/.." && pwd)/sim/data/profiles
CAPSIM=${CAPSIM:-capsim}
LOOP="an independent torch loop, not capsim calibrate: torch 2.11.0+cu130, eager, cudnn.benchmark off, \
inference_mode; one sample = stack the per-request tensors on the host, copy to the GPU (non-blocking), forward, \
copy the output back (synchronising); 60 back-to-back samples per size after 5 warm-up calls of that size"
"$CAPSIM" profile import "$DATA/profile_h100_mlp_resnet50.json" --format batch-json --model-key resnet50 \
  --arch resnet50 --dtype fp16 --cold-start "$DATA/coldstart.json" \
  --measured-with "$LOOP; torchvision resnet50(weights=None), channels_last, input 3x224x224 fp16 per request" \
  --out "$OUT/h100-resnet50-fp16.json"
"$CAPSIM" profile import "$DATA/profile_h100_bert.json" --format batch-json --model-key bert \
  --arch bert-encoder --dtype fp16 --cold-start "$DATA/coldstart.json" \
  --measured-with "$LOOP; nn.Embedding(30522, 768) + nn.TransformerEncoder (12 layers, d 768, 12 heads, ff 3072, \
ReLU, post-norm, batch_first, nested tensor off) + Linear(768, 2) on token 0; 128 token ids per request" \
  --out "$OUT/h100-bert-encoder-fp16.json"
"$CAPSIM" profile import "$DATA/profile_h100_mlp_resnet50.json" --format batch-json --model-key mlp \
  --arch mlp-2048 --dtype fp32 --cold-start "$DATA/coldstart.json" \
  --measured-with "$LOOP; Linear 256-2048, ReLU, 2048-2048, ReLU, 2048-2048, ReLU, 2048-1 (no sigmoid), fp32 \
(TF32 off), 256 floats per request" \
  --out "$OUT/h100-mlp-2048-fp32.json"
