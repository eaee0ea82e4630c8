#!/usr/bin/env bash
# Every model figure in README.md, engines/MODEL_CARD.md and engines/manifest.json, measured and
# recorded (`--record` stores each figure with its command in the manifest).
# Run from the repository root with the research data in ../shared/data:
#   tools/model_figures.sh                      # every model in the manifest (about 5 min each)
#   MODELS="vgg_s_live_int8" tools/model_figures.sh
# Each model is scored against both label sets: FER2013's folder labels and the FER+ majority.
set -euo pipefail
D=../shared/data
OUT=${OUT:-runs/figures}
MODELS=${MODELS:-$(python -c "import json; print(' '.join(json.load(open('engines/manifest.json'))['models']))")}
mkdir -p "$OUT"

for M in $MODELS; do
  E=(--model "$M")
  # Validation split (PublicTest): the split every choice is made on.
  edgefer eval $D/fer2013/test --glob 'PublicTest_*' "${E[@]}" --json "$OUT/$M-publictest.json" \
      --record fer2013_publictest
  edgefer eval $D/fer2013/test --glob 'PublicTest_*' "${E[@]}" \
      --ferplus-labels $D/ferplus/ferplus_labels.csv --json "$OUT/$M-ferplus_publictest.json" \
      --record ferplus_publictest
  # Test split (PrivateTest): reported, never used to choose.
  edgefer eval $D/fer2013/test --glob 'PrivateTest_*' "${E[@]}" --json "$OUT/$M-privatetest.json" \
      --confusion-png "$OUT/$M-confusion_privatetest.png" --record fer2013_privatetest
  edgefer eval $D/fer2013/test --glob 'PrivateTest_*' "${E[@]}" \
      --exclude-list $D/fer2013/test_train_duplicates.csv --json "$OUT/$M-privatetest_dedup.json" \
      --record fer2013_privatetest_dedup
  # FER+ majority vote on the same images (contempt/unknown/not-a-face majorities dropped);
  # the JSON's label_sets holds both label sets on these images.
  edgefer eval $D/fer2013/test --glob 'PrivateTest_*' "${E[@]}" \
      --ferplus-labels $D/ferplus/ferplus_labels.csv --json "$OUT/$M-ferplus_privatetest.json" \
      --record ferplus_privatetest
  # Cross-dataset: CK+48 (6 classes, no neutral; never trained on).
  edgefer eval $D/ckplus48 "${E[@]}" --json "$OUT/$M-ckplus48.json" --record ckplus48
  # The live path: full images through BlazeFace and the aligner (48x48 crops upscaled first).
  edgefer eval $D/fer2013/test --glob 'PrivateTest_*' --mode detect "${E[@]}" \
      --json "$OUT/$M-privatetest_detect.json" --record fer2013_privatetest_detect
  edgefer eval $D/fer2013/test --glob 'PrivateTest_*' --mode detect "${E[@]}" \
      --ferplus-labels $D/ferplus/ferplus_labels.csv \
      --json "$OUT/$M-ferplus_privatetest_detect.json" --record ferplus_privatetest_detect
done
