#!/usr/bin/env bash
# The CNN vs GPT-4V comparison on FER2013 PrivateTest, replaying GPT-4V's recorded answers
# (Lian et al. 2023) through a local OpenAI-compatible server: no key, no network.
# Six `edgefer eval --cascade` runs (FER2013 PrivateTest under FER2013 and FER+ labels, and
# CK+48's posed expressions, each with the open and top-2 prompts); each writes every figure,
# including llm.held_out.*, to $OUT/cascade_<labels>_<prompt>.json. Shares for the held-out
# operating points are capped as in issue 12's goals: 20% under FER2013 labels, 30% under
# FER+ labels; 30% on CK+48 (no goal there). Costs use gpt-4o's list price (GPT-4V is retired)
# on the replay server's reported usage (OpenAI's 85 tokens per low-detail image).
set -euo pipefail
D=../shared/data
OUT=${OUT:-/tmp/edgefer-figures}
PORT=${PORT:-8090}
mkdir -p "$OUT"
python tools/replay_gpt4v.py --data $D --port "$PORT" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
sleep 10
LLM=(--llm-base-url "http://127.0.0.1:$PORT/v1" --llm-model gpt4v-replay --llm-rpm 100000
     --llm-cache "$OUT/answers.sqlite" --llm-price 2.50,10.00)
run() {  # labels prompt
  local data=($D/fer2013/test --glob 'PrivateTest_*') extra=(--max-share 0.2)
  [ "$1" = ferplus ] && extra=(--ferplus-labels $D/ferplus/ferplus_labels.csv --max-share 0.3)
  [ "$1" = ckplus48 ] && data=($D/ckplus48) extra=(--max-share 0.3)
  python -m edgefer eval "${data[@]}" "${extra[@]}" --cascade \
      "${LLM[@]}" --llm-prompt "$2" --json "$OUT/cascade_$1_$2.json" \
      --markdown "$OUT/cascade_$1_$2.md" > "$OUT/cascade_$1_$2.log" 2>&1
}
runs=()
for prompt in open top2; do  # the first run per prompt fills the cache; the second reuses it
  run fer2013 $prompt
  run ferplus $prompt &
  runs+=($!)
  run ckplus48 $prompt
done
wait "${runs[@]}"
