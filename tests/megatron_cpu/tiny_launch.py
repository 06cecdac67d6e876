"""README.md's Megatron launch flags with tiny sizes: what tests/test_megatron_e2e.py runs on CPU and
scripts/gpu_check.py runs on a GPU (test_docs_use_the_tested_flags keeps README.md and the example to them)."""

LAUNCH = [
    "--num-layers", "2", "--hidden-size", "64", "--ffn-hidden-size", "128", "--num-attention-heads", "4",
    "--seq-length", "32", "--max-position-embeddings", "32",
    "--position-embedding-type", "rope", "--normalization", "RMSNorm", "--swiglu", "--disable-bias-linear",
    "--micro-batch-size", "2", "--global-batch-size", "4", "--train-samples", "16",
    "--lr", "1e-3", "--min-lr", "1e-4", "--lr-decay-style", "cosine", "--lr-warmup-samples", "4",
    "--weight-decay", "0.1", "--clip-grad", "1.0", "--adam-beta2", "0.95", "--bf16",
    "--tokenizer-type", "NullTokenizer", "--vocab-size", "257",
    "--regmix-valid-samples-per-domain", "64", "--eval-interval", "2",
    "--save-interval", "2", "--log-interval", "1",
]
# What comparisons across layouts add: dropout off, and one vocabulary padding for TP = 1 and TP = 2.
EXACT = ["--attention-dropout", "0", "--hidden-dropout", "0", "--make-vocab-size-divisible-by", "256"]
# Flags whose values are sizes, paths or layout; the docs may differ from the test in their values only.
SIZED = {"--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--data-mixture-from", "--save",
         "--tensorboard-dir"}
