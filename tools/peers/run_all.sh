#!/usr/bin/env bash
# Measure edgefer and its peers on the same images; print the side-by-side table.
#
#   tools/peers/run_all.sh [OUT_DIR]      (from the repository root; default OUT_DIR runs/peers)
#
# Needs the installs of tools/peers/README.md: the `fer` virtual environment ($FER_PYTHON,
# default ../venv-peers/bin/python) and `npm ci` in tools/peers. Everything runs under nice:
# the figures are accuracy; the per-image times are only indicative on a shared machine.
set -euo pipefail

OUT=${1:-runs/peers}
DATA=${DATA:-../shared/data}
FER_PYTHON=${FER_PYTHON:-../venv-peers/bin/python}
# The JavaScript detector pipelines cost up to a CPU-second per picture on WASM: human runs on
# 1 in 10 PrivateTest pictures and 1 in 3 CK+48 pictures (one frame of each sequence); face-api
# on a random sample (the first N pictures in md5(path) order; a run stopped early keeps a valid
# smaller sample).
declare -A EVERY=([fer2013]=10 [ckplus48]=3)
declare -A SAMPLE=([fer2013]=400 [ckplus48]=300)
NICE="nice -n 10"
mkdir -p "$OUT"
export PYTHONPATH=$PWD

# name | data folder | glob
SETS=("fer2013|$DATA/fer2013/test|PrivateTest_*" "ckplus48|$DATA/ckplus48|*")

for set in "${SETS[@]}"; do
  IFS='|' read -r name dir glob <<< "$set"
  # edgefer: the shipped default, the way `edgefer eval` runs it, plus per-image labels
  $NICE python -m edgefer eval "$dir" --glob "$glob" --json "$OUT/eval_crops_$name.json" > /dev/null
  $NICE python -m edgefer eval "$dir" --glob "$glob" --model vgg_s \
    --json "$OUT/eval_float_crops_$name.json" > /dev/null
  $NICE python tools/peers/edgefer_predict.py "$dir" --glob "$glob" -o "$OUT/edgefer_crops_$name.json"
  $NICE python tools/peers/edgefer_predict.py "$dir" --glob "$glob" --mode detect \
    -o "$OUT/edgefer_detect_$name.json"
  # fer: its classifier on the crop, and the crop handed over as a face box (its old misuse)
  $NICE "$FER_PYTHON" tools/peers/fer_predict.py "$dir" --glob "$glob" --check 300 \
    -o "$OUT/fer_crop_$name.json"
  $NICE "$FER_PYTHON" tools/peers/fer_predict.py "$dir" --glob "$glob" --mode whole-box \
    -o "$OUT/fer_whole-box_$name.json"
  # face-api and human: the expression model on the crop; each library's own detector pipeline
  $NICE node tools/peers/js_predict.js --peer faceapi --mode crop "$dir" --glob "$glob" \
    -o "$OUT/faceapi_crop_$name.json"
  $NICE node tools/peers/js_predict.js --peer faceapi "$dir" --glob "$glob" \
    --sample "${SAMPLE[$name]}" -o "$OUT/faceapi_detect_$name.json"
  $NICE node tools/peers/js_predict.js --peer human --mode crop "$dir" --glob "$glob" \
    -o "$OUT/human_crop_$name.json"
  $NICE node tools/peers/js_predict.js --peer human "$dir" --glob "$glob" --every "${EVERY[$name]}" \
    -o "$OUT/human_detect_$name.json"
done

python tools/peers/compare.py "$OUT"/*.json --markdown "$OUT/table.md"
