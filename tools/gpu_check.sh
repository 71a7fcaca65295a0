#!/usr/bin/env bash
# The GPU self-check (`adatosk selfcheck --device cuda`) on a GPU machine that has a copy of the working tree and no
# .venv; under 8 minutes on one GPU. Prints the table and writes selfcheck.json and selfcheck.md into $OUT (default:
# the tree's root).
#
#   tools/gpu_check.sh          on the GPU machine. With wheels in .whl/ (a machine with no package index, such as
#                               the lent H200 ones, whose python3 holds a CUDA torch, timm, opencv, numpy, pandas):
#                               the wheels go to a --target folder on PYTHONPATH beside that python3's packages.
#                               Without: `pip install -e .` into .venv, the pinned torch included.
#   tools/gpu_check.sh wheels   here, before: build into .whl/ (git-ignored) the pure-Python wheels such a machine
#                               lacks; the device run then carries .whl (about 0.5 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl
# What adatosk imports that the lent machines' image lacks, pinned as pyproject.toml pins them (all pure Python).
OFFLINE_WHEELS="hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 fvcore==0.1.5.post20221221
iopath==0.1.10 yacs==0.1.8 termcolor==3.3.0"

if [ "${1:-}" = wheels ]; then
    python3 -m pip wheel --quiet --no-deps -w "$WHEELS" $OFFLINE_WHEELS
    ls "$WHEELS"
    exit 0
fi

OUT=${OUT:-.}
start=$(date +%s)
if [ -d "$WHEELS" ]; then
    # No venv: that python3 is itself a venv, and a venv made from it would not see its packages.
    python3 -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target /tmp/adatosk_site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/adatosk_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    PYTHON=python3
else
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
        .venv/bin/pip install --quiet --upgrade pip
        .venv/bin/pip install --quiet -e .
    fi
    PYTHON=.venv/bin/python
fi
echo "gpu_check: environment ready in $(( $(date +%s) - start )) s" >&2
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'; print(torch.__version__, torch.cuda.get_device_name())"
PYTHONUNBUFFERED=1 timeout 470 "$PYTHON" -m adatosk selfcheck --device cuda --out "$OUT/selfcheck.json" \
    | tee "$OUT/selfcheck.md"
echo "gpu_check: done in $(( $(date +%s) - start )) s" >&2
