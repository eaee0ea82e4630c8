#!/usr/bin/env bash
# The consensus model's GPU path in one command: the teacher (vgg_l from scratch on the FER+
# votes, recipes/vgg_l_ferplus.toml, 100 epochs), then the shipped consensus model distilled from
# it (recipes/vgg_s_ferplus_kd.toml, 8 epochs) beside a control, the same 8 epochs without the
# teacher (recipes/vgg_s_ferplus_stage2.toml: session 13 found that more epochs alone gained what
# session 12 had credited to distillation); beside the teacher, vgg_m from scratch on the votes
# (the teacher's recipe with --arch vgg_m: 4.0M parameters, the next size that fits the edge
# budget unmirrored; session 15 found vgg_s from scratch ties the staged fine-tune); the student
# exported with mirror averaging, its int8 copy calibrated, and the validation figures of all
# five. Every choice is made on PublicTest; run tools/model_figures.sh afterwards for the
# test-split figures (and `edgefer export runs/consensus/vgg_m/last.pt --tta none ...` for
# vgg_m, should it win).
# Why a script: on a lent GPU the whole path takes minutes (the teacher 2.8 s per epoch on an
# H200, BENCHMARKS.md), while the teacher's weights (28 MB, trained on FER2013) stay out of the
# repository; on two CPU cores the teacher alone takes about a day.
# Run from the repository root with the research data in ../shared/data:
#   NAME=vgg_s_ferplus5 tools/consensus_on_gpu.sh
# A rehearsal of every step on a CPU, in a scratch clone (export adds NAME to the engines/ of
# the checkout edgefer is installed from):
#   DEVICE=cpu TEACHER_EPOCHS=1 STUDENT_EPOCHS=1 TRAIN_GLOB='Training_10*' NAME=smoke \
#       tools/consensus_on_gpu.sh
# Interrupted? Run it again: each stage resumes from its last checkpoint.
set -euo pipefail
D=${DATA:-../shared/data}
RUNS=${RUNS:-runs/consensus}
NAME=${NAME:?name the exported model, e.g. NAME=vgg_s_ferplus5}
INIT=${INIT:-engines/vgg_s_ferplus4.pt}
DEVICE=${DEVICE:-cuda}
TRAIN_GLOB=${TRAIN_GLOB:-*}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-100}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-8}
VAL=(--val $D/fer2013/test --val-glob 'PublicTest_*')
VOTES=$D/ferplus/ferplus_labels.csv
KD_RECIPE=engines/recipes/vgg_s_ferplus_kd.toml

# A stage resumes where its run folder already holds a checkpoint.
train() {
  local out=$1; shift
  local resume=()
  [[ -f $out/last.pt ]] && resume=(--resume)
  edgefer train $D/fer2013/train --train-glob "$TRAIN_GLOB" "${VAL[@]}" --ferplus $VOTES \
      --device "$DEVICE" --out "$out" --crop-cache "$RUNS/crop-cache" "${resume[@]}" "$@"
}

# vgg_m trains beside the teacher: one of these networks leaves the GPU mostly idle (BENCHMARKS.md).
train "$RUNS/vgg_m" --recipe engines/recipes/vgg_l_ferplus.toml --arch vgg_m \
    --epochs "$TEACHER_EPOCHS" &
vgg_m=$!
train "$RUNS/teacher" --recipe engines/recipes/vgg_l_ferplus.toml --epochs "$TEACHER_EPOCHS"
wait $vgg_m
train "$RUNS/student" --recipe $KD_RECIPE --epochs "$STUDENT_EPOCHS" --init "$INIT" \
    --teacher "$RUNS/teacher/last.pt"
train "$RUNS/control" --recipe engines/recipes/vgg_s_ferplus_stage2.toml --epochs "$STUDENT_EPOCHS" \
    --seed 3 --init "$INIT"
edgefer export "$RUNS/student/last.pt" --name "$NAME" "${VAL[@]}" --recipe $KD_RECIPE \
    --tta flip --ferplus-labels $VOTES \
    --license "Apache-2.0 (weights trained by the edgefer authors; see engines/NOTICE.md)"
edgefer quantize --model "$NAME" --name "${NAME}_int8" "${VAL[@]}" --ferplus-labels $VOTES
# Shipped consensus model, teacher, student, control and vgg_m side by side: FER+ majority on
# PublicTest, FER2013's own crops and the live framing (the rule to ship: +0.3 on their mean,
# the student must beat the control to credit the teacher, and vgg_m is compared unmirrored:
# run framing_figures.py again with --no-mirror). Each is framed as its export would frame faces;
# final weights and weight average (:ema) side by side.
python tools/framing_figures.py "$INIT" "$RUNS/teacher/last.pt" "$RUNS/student/last.pt" \
    "$RUNS/student/last.pt:ema" "$RUNS/control/last.pt" "$RUNS/control/last.pt:ema" \
    "$RUNS/vgg_m/last.pt" --val $D/fer2013/test --glob 'PublicTest_*' \
    --ferplus $VOTES --crop-cache "$RUNS/crop-cache"
