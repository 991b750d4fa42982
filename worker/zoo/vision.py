"""Image classifiers with named, seed-style partitions: tiny MLP/CNN, CIFAR MobileNetV2 and ResNet-18."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch.nn.functional as F
from torch import nn

from slimpipe.presets import MOBILENETV2_STAGES  # the seed's 5-stage split (ReLUs/pool made modules)
from worker.zoo.common import Chain, Flatten, ZooModel


def tiny_mlp(options: dict[str, Any], *, num_classes: int, input_shape: tuple[int, ...], **_: Any) -> ZooModel:
    """`depth` hidden Linear+ReLU layers of width `hidden`, then a linear head."""
    hidden = int(options.get("hidden", 64))
    depth = int(options.get("depth", 2))
    if depth < 2:
        raise ValueError(f"model.options.depth: tiny_mlp needs at least 2 hidden layers, got {depth}")
    in_features = 1
    for d in input_shape:
        in_features *= d
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=Flatten())
    for k in range(1, depth + 1):
        layers[f"fc{k}"] = nn.Linear(in_features if k == 1 else hidden, hidden)
        layers[f"act{k}"] = nn.ReLU()
    layers["head"] = nn.Linear(hidden, num_classes)
    module = Chain(layers)
    blocks = list(module._modules)
    middle = blocks[3:-1]
    return ZooModel(module, [["flatten", "fc1", "act1"], middle, ["head"]], blocks)


def tiny_cnn(options: dict[str, Any], *, num_classes: int, input_shape: tuple[int, ...], **_: Any) -> ZooModel:
    """conv-relu-pool twice, then a linear head; BatchNorm only with options.batchnorm."""
    width = int(options.get("width", 16))
    channels = input_shape[0]
    norm = (lambda c: nn.BatchNorm2d(c)) if options.get("batchnorm") else (lambda c: nn.Identity())
    module = Chain(
        OrderedDict(
            conv1=nn.Conv2d(channels, width, 3, padding=1),
            bn1=norm(width),
            act1=nn.ReLU(),
            conv2=nn.Conv2d(width, 2 * width, 3, padding=1),
            bn2=norm(2 * width),
            act2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(4) if input_shape[-1] >= 8 else nn.Identity(),
            conv3=nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            act3=nn.ReLU(),
            flatten=Flatten(),
            head=nn.Linear(2 * width * min(4, input_shape[-2]) * min(4, input_shape[-1]), num_classes),
        )
    )
    stages = [["conv1", "bn1", "act1"], ["conv2", "bn2", "act2", "pool"], ["conv3", "act3", "flatten", "head"]]
    return ZooModel(module, stages, list(module._modules))


# --------------------------------------------------------------------------- MobileNetV2 (CIFAR)


class Block(nn.Module):
    """Inverted residual: expand 1x1, depthwise 3x3, project 1x1 (kuangliu/pytorch-cifar)."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


# (expansion, out_planes, num_blocks, stride); stride 2 -> 1 in the second row for CIFAR-10.
MOBILENETV2_CFG = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]



def mobilenetv2_cifar(options: dict[str, Any], *, num_classes: int, input_shape: tuple[int, ...], **_: Any) -> ZooModel:
    width = float(options.get("width_mult", 1.0))
    in_planes = max(8, int(32 * width))
    layers = []
    for expansion, out, num_blocks, stride in MOBILENETV2_CFG:
        out = max(8, int(out * width))
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(Block(in_planes, out, expansion, s))
            in_planes = out
    last = max(16, int(1280 * width))
    module = Chain(
        OrderedDict(
            conv1=nn.Conv2d(input_shape[0], max(8, int(32 * width)), 3, padding=1, bias=False),
            bn1=nn.BatchNorm2d(max(8, int(32 * width))),
            act1=nn.ReLU(),
            layers=nn.Sequential(*layers),
            conv2=nn.Conv2d(in_planes, last, 1, bias=False),
            bn2=nn.BatchNorm2d(last),
            act2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=Flatten(),
            linear=nn.Linear(last, num_classes),
        )
    )
    blocks = ["conv1", "bn1", "act1"] + [f"layers[{i}]" for i in range(len(layers))]
    blocks += ["conv2", "bn2", "act2", "pool", "flatten", "linear"]
    return ZooModel(module, MOBILENETV2_STAGES, blocks)


# --------------------------------------------------------------------------- ResNet-18 (CIFAR)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18_cifar(options: dict[str, Any], *, num_classes: int, input_shape: tuple[int, ...], **_: Any) -> ZooModel:
    base = int(options.get("width", 64))
    children: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv2d(input_shape[0], base, 3, padding=1, bias=False), bn1=nn.BatchNorm2d(base), act1=nn.ReLU()
    )
    in_planes = base
    for k, (planes, stride) in enumerate([(base, 1), (2 * base, 2), (4 * base, 2), (8 * base, 2)]):
        children[f"layer{k + 1}"] = nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))
        in_planes = planes
    children.update(pool=nn.AdaptiveAvgPool2d(1), flatten=Flatten(), linear=nn.Linear(in_planes, num_classes))
    module = Chain(children)
    stages = [["conv1", "bn1", "act1", "layer1"], ["layer2"], ["layer3"], ["layer4"], ["pool", "flatten", "linear"]]
    blocks = ["conv1", "bn1", "act1"] + [f"layer{k}[{b}]" for k in range(1, 5) for b in range(2)]
    blocks += ["pool", "flatten", "linear"]
    return ZooModel(module, stages, blocks)
