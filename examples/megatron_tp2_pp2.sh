#!/usr/bin/env bash
# Megatron-LM GPT pretraining on 4 GPUs (TP=2 x PP=2, DP=1) with the data mixture from a regmix.json.
#
#   MIXTURE=study/regmix.json OUT=runs/tp2pp2 bash examples/megatron_tp2_pp2.sh
#
# The flags are README.md's launch line; tests/test_megatron_e2e.py runs the same flags (tiny sizes, gloo)
# through Megatron's real pretrain() on CPU, and checks that this file and README.md keep to them.
# The corpus must come with a corpus.json (regmix corpus build) or use the tokenizer given below; here the
# byte tokenizer's ids are reproduced with NullTokenizer --vocab-size 257 (eod = 256). For a HuggingFace
# tokenizer use --tokenizer-type HuggingFaceTokenizer --tokenizer-model <name or path>.
# Per-domain validation losses land in $OUT/metrics.jsonl, $OUT/tb and $OUT/megatron_tb
# (lm loss validation-<domain>). Without Transformer Engine/apex the entry point adds the flags it needs.
set -euo pipefail

MIXTURE=${MIXTURE:?set MIXTURE to a regmix.json}
OUT=${OUT:-runs/megatron_tp2_pp2}
NPROC=${NPROC:-4}
TRAIN_SAMPLES=${TRAIN_SAMPLES:-102400}
PYTHON=${PYTHON:-python}

export CUDA_DEVICE_MAX_CONNECTIONS=1  # Megatron requires it for tensor parallelism before Blackwell

exec "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" \
  -m regmix_plugin.megatron.pretrain_gpt \
  --tensor-model-parallel-size 2 \
  --pipeline-model-parallel-size 2 \
  --num-layers 8 --hidden-size 512 --ffn-hidden-size 2048 --num-attention-heads 8 \
  --seq-length 1024 --max-position-embeddings 1024 \
  --position-embedding-type rope --normalization RMSNorm --swiglu --disable-bias-linear \
  --micro-batch-size 4 --global-batch-size 32 \
  --train-samples "$TRAIN_SAMPLES" \
  --lr 6e-4 --min-lr 6e-5 --lr-decay-style cosine --lr-warmup-samples 3200 \
  --weight-decay 0.1 --clip-grad 1.0 --adam-beta2 0.95 --bf16 \
  --tokenizer-type NullTokenizer --vocab-size 257 \
  --data-mixture-from "$MIXTURE" \
  --regmix-valid-samples-per-domain 64 \
  --eval-interval 200 \
  --save "$OUT" --save-interval 1000 \
  --log-interval 10 --tensorboard-dir "$OUT/megatron_tb"
