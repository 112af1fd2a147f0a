#!/bin/bash
# Side-by-side runs of the mission tasks (E1-E5): for each task, PyTorch's script from
# shared/bench/mission (or benches/peers for E3c), then kiln's example, one after the other,
# each under /usr/bin/time -v (wall time and peak RSS). Logs go to $OUT (default
# target/mission); read the timed parts (s/epoch, features s, train s, s/step) from the logs.
#
#   cargo build --release --examples
#   bash benches/mission.sh [--python venv/bin/python] [--shared ../shared] [e1 e2 e3a e3b e3c e4 e5]
#
# Both sides get 2 threads (OMP/MKL/RAYON_NUM_THREADS=2). Run it on a quiet machine: every
# other process steals time from both sides unevenly.
set -eu
PY=python3
SHARED=../shared
while [ $# -gt 0 ]; do
  case $1 in
    --python) PY=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    --shared) SHARED=$2; shift 2 ;;
    *) break ;;
  esac
done
TASKS=${*:-e1 e2 e3a e3b e3c e4 e5}
SHARED=$(realpath "$SHARED")
BIN=$(realpath target/release/examples)
OUT=$(realpath -m "${OUT:-target/mission}")
mkdir -p "$OUT"
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 RAYON_NUM_THREADS=2 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export RESULTS="$OUT/torch-results" ASSETS="$SHARED/assets"
A=$SHARED/assets
M=$SHARED/bench/mission
PEERS=$(realpath benches/peers)

# run NAME CMD...: runs CMD under /usr/bin/time -v, log in $OUT/NAME.log, one summary line.
run() {
  local name=$1; shift
  /usr/bin/time -v "$@" > "$OUT/$name.log" 2>&1 || echo "$name: exit status $?" >> "$OUT/$name.log"
  local rss wall
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$OUT/$name.log")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$OUT/$name.log")
  echo "$name wall=$wall peak_rss_mib=$rss"
}

for t in $TASKS; do
  case $t in
    e1)  run e1-torch bash -c "cd $M && $PY e1_mnist_mlp.py"
         run e1-kiln "$BIN/mnist_mlp" --data "$A/mnist" ;;
    e2)  run e2-torch bash -c "cd $M && $PY e2_mnist_cnn.py"
         run e2-kiln "$BIN/mnist_cnn" --data "$A/mnist" ;;
    e3a) run e3a-torch bash -c "cd $M && $PY e3_minilm_sentiment.py frozen"
         run e3a-kiln "$BIN/minilm_sentiment" --model "$A/minilm" --data "$A/text/sentiment" --mode frozen ;;
    e3b) run e3b-torch bash -c "cd $M && $PY e3_minilm_sentiment.py finetune"
         run e3b-kiln "$BIN/minilm_sentiment" --model "$A/minilm" --data "$A/text/sentiment" --mode finetune ;;
    e3c) run e3c-torch bash -c "cd $M && $PY $PEERS/e3_lora.py --peers $M"
         run e3c-kiln "$BIN/minilm_sentiment" --model "$A/minilm" --data "$A/text/sentiment" --mode lora ;;
    e4)  run e4-torch bash -c "cd $M && $PY e4_char_gpt.py"
         run e4-kiln "$BIN/gpt_austen" --data "$A/text/austen-all.txt" ;;
    e5)  run e5-torch bash -c "cd $M && $PY e5_effnet_transfer.py"
         run e5-kiln "$BIN/efficientnet_transfer" --model "$A/efficientnet-lite0" --data "$A/mnist" ;;
    *)   echo "unknown task $t"; exit 2 ;;
  esac
done
