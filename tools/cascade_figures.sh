#!/usr/bin/env bash
# The CNN vs GPT-4V cascade on FER2013 PrivateTest, replaying GPT-4V's recorded answers
# (Lian et al. 2023) through a local OpenAI-compatible server: no key, no network.
set -euo pipefail
D=../shared/data
OUT=${OUT:-/tmp/edgefer-figures}
PORT=${PORT:-8090}
mkdir -p "$OUT"
python tools/replay_gpt4v.py --data $D --port "$PORT" &
SERVER=$!
trap 'kill $SERVER' EXIT
sleep 5
LLM=(--llm-base-url "http://127.0.0.1:$PORT/v1" --llm-model gpt4v-replay)
for labels in fer2013 ferplus; do
  extra=()
  [ $labels = ferplus ] && extra=(--ferplus-labels $D/ferplus/ferplus_labels.csv)
  edgefer eval $D/fer2013/test --glob 'PrivateTest_*' "${extra[@]}" --cascade "${LLM[@]}" \
      --json "$OUT/cascade_$labels.json" --markdown "$OUT/cascade_$labels.md"
  edgefer eval $D/fer2013/test --glob 'PrivateTest_*' "${extra[@]}" --cascade --llm-top2 \
      "${LLM[@]}" --json "$OUT/cascade_${labels}_top2.json" --markdown "$OUT/cascade_${labels}_top2.md"
done
