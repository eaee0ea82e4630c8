#!/usr/bin/env bash
# Every model figure in README.md, engines/MODEL_CARD.md and engines/manifest.json, measured and
# recorded (`--record` stores each figure with its command in the manifest).
# Run from the repository root, with the venv active and the research data in ../shared/data:
#   tools/model_figures.sh                      # every model in the manifest (about 5 min each)
#   MODELS="vgg_s4_int8 vgg_s_ferplus4_int8" tools/model_figures.sh
# The manifest is engines/manifest.json, or the one EDGEFER_MANIFEST names (a scratch copy of
# engines/ with a model of your own); JSON files and confusion charts go to OUT (runs/figures).
# Each model is scored against both label sets: FER2013's folder labels and the FER+ majority.
set -euo pipefail
if [ $# -gt 0 ]; then  # no options: --help, or anything else, prints this header and stops
  case $1 in
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "model_figures.sh takes no arguments (got $1): name models with MODELS=\"...\"; see --help" >&2; exit 2 ;;
  esac
fi
command -v edgefer >/dev/null || { echo "model_figures.sh: edgefer not found: activate the venv" >&2; exit 2; }
D=../shared/data
OUT=${OUT:-runs/figures}
MANIFEST=${EDGEFER_MANIFEST:-engines/manifest.json}
MODELS=${MODELS:-$(python -c "import json, sys; print(' '.join(json.load(open(sys.argv[1]))['models']))" "$MANIFEST")}
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
