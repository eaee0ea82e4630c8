#!/usr/bin/env bash
# Every model figure in README.md and engines/manifest.json, measured and recorded.
# Run from the repository root with the research data in ../shared/data (about 5 minutes).
set -euo pipefail
D=../shared/data
OUT=${OUT:-/tmp/edgefer-figures}
mkdir -p "$OUT"

# Validation split (PublicTest): the selective-prediction table behind the LLM threshold.
edgefer eval $D/fer2013/test --glob 'PublicTest_*' --json "$OUT/publictest.json" \
    --record fer2013_publictest
# Test split (PrivateTest), all 3,589 images and without the test/train duplicates.
edgefer eval $D/fer2013/test --glob 'PrivateTest_*' --json "$OUT/privatetest.json" \
    --confusion-png "$OUT/confusion_privatetest.png" --record fer2013_privatetest
edgefer eval $D/fer2013/test --glob 'PrivateTest_*' \
    --exclude-list $D/fer2013/test_train_duplicates.csv --json "$OUT/privatetest_dedup.json" \
    --record fer2013_privatetest_dedup
# FER+ majority vote on the same images (contempt/unknown/not-a-face majorities dropped).
edgefer eval $D/fer2013/test --glob 'PrivateTest_*' \
    --ferplus-labels $D/ferplus/ferplus_labels.csv --json "$OUT/ferplus_privatetest.json" \
    --record ferplus_privatetest
# Cross-dataset: CK+48 (6 classes, no neutral).
edgefer eval $D/ckplus48 --json "$OUT/ckplus48.json" --record ckplus48
# The live path: full images through BlazeFace and the aligner (48x48 crops upscaled first).
edgefer eval $D/fer2013/test --glob 'PrivateTest_*' --mode detect \
    --json "$OUT/privatetest_detect.json" --record fer2013_privatetest_detect
