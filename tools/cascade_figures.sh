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
trap 'kill $SERVER 2>/dev/null' EXIT
sleep 5
LLM=(--llm-base-url "http://127.0.0.1:$PORT/v1" --llm-model gpt4v-replay --llm-rpm 100000)
for labels in fer2013 ferplus; do
  extra=()
  [ $labels = ferplus ] && extra=(--ferplus-labels $D/ferplus/ferplus_labels.csv)
  for prompt in open top2; do
    edgefer eval $D/fer2013/test --glob 'PrivateTest_*' "${extra[@]}" --cascade "${LLM[@]}" \
        --llm-prompt $prompt --json "$OUT/cascade_${labels}_$prompt.json" \
        --markdown "$OUT/cascade_${labels}_$prompt.md"
  done
done
