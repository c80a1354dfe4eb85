#!/usr/bin/env bash
# The paper's three claims, tested on the persona task family (issue 9). One study per argument:
#   bash scripts/claims.sh methods|lr|transfer|strength|headroom|all
#   bash scripts/claims.sh pretrained     (issue 19; not part of `all`: SmolLM2 full fine-tuning, 88 min measured on 2 CPU cores)
# CLAIMS_OVERRIDES (env) adds Hydra overrides to every job, e.g. smaller sizes for a smoke test.
# Each study is a sweep of an `experiment=claims_*` preset into a fixed sweep dir and ends in a report under
# $PERCONTRAST_OUTPUTS/reports/claims_<study>. Re-runnable: every finished job is skipped (its artifacts
# exist), so a rerun of a finished study only re-composes configs and rewrites the report.
set -euo pipefail
which=${1:-all}
root=${PERCONTRAST_OUTPUTS:-outputs}
read -r -a extra <<< "${CLAIMS_OVERRIDES:-}"
pc() { python -m percontrast_cli.cli "$@" "${extra[@]}"; }
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
plots=${CLAIMS_PLOTS:-personal_token_acc,nonpersonal_token_acc,persona_recall,rougeL}
report() {  # report <study> <sweep dir>...
  local name=$1 dirs
  shift
  dirs=$(printf '%s,' "$@")
  pc report "report.evals=[${dirs%,}]" "report.out_dir=$root/reports/claims_$name" \
    "report.plot_metrics=[$plots]" "report.title='Claims study: $name'"
}

if [[ $which == methods || $which == all ]]; then
  stamp "claim 1: CE vs PerCE vs LossCE / EntCE / DFT, 3 seeds, 150 and 450 steps"
  time pc run -m experiment=claims_methods
  report methods "$root/hydra/claims_methods"
fi

if [[ $which == lr || $which == all ]]; then
  stamp "claim 2: CE vs PerCE over learning rates, 2 seeds"
  time pc run -m experiment=claims_lr
  report lr "$root/hydra/claims_lr"
fi

if [[ $which == transfer || $which == all ]]; then
  stamp "claim 3: train on each task, evaluate on all three, CE vs PerCE, 2 seeds"
  time pc run -m experiment=claims_transfer
  # every checkpoint of the sweep, evaluated on every task (its own task's eval exists and is skipped); the
  # preset's own sweep (task x loss x seed) is removed: loss and seed come with the checkpoint
  checkpoints=$(python - "$root/hydra/claims_transfer" <<'PY'
import json, pathlib, sys
jobs = sorted(pathlib.Path(sys.argv[1]).glob("*/artifacts.json"))
print(",".join(sorted({json.loads(job.read_text())["checkpoint"] for job in jobs})))
PY
)
  time pc eval -m experiment=claims_transfer "checkpoint=$checkpoints" \
    task=persona_email,persona_review,persona_topic \
    '~hydra.sweeper.params.task' '~hydra.sweeper.params.loss' '~hydra.sweeper.params.seed' \
    "hydra.sweep.dir=$root/hydra/claims_transfer_evals"
  report transfer "$root/hydra/claims_transfer" "$root/hydra/claims_transfer_evals"
fi

if [[ $which == strength || $which == all ]]; then
  stamp "PerCE strength: alpha x clip_max, 2 seeds, and CE at the same budget"
  time pc run -m experiment=claims_strength
  time pc run -m experiment=claims_strength loss=ce loss.alpha=1 loss.clip_max=5 \
    "hydra.sweep.dir=$root/hydra/claims_strength_ce"
  report strength "$root/hydra/claims_strength" "$root/hydra/claims_strength_ce"
fi

if [[ $which == headroom || $which == all ]]; then
  stamp "headroom with a pretrained model: SmolLM2 + LoRA, CE and PerCE on persona_email"
  time pc run -m experiment=persona_real loss=ce,perce seed=0,1
  report headroom "$root/hydra/persona_real"
fi
if [[ $which == pretrained ]]; then
  # Issue 19: SmolLM2-135M-Instruct, full fine-tuning (experiment=claims_pretrained). Sizes (env):
  start_steps=${PRETRAINED_START_STEPS:-80}   # the shared CE start (2.7 epochs): generic text has plateaued
  steps=${PRETRAINED_STEPS:-15}               # the study's extra steps from that start, every loss
  seeds=${PRETRAINED_SEEDS:-0,1,2}            # seeds of the extra steps (data order); one shared start
  gate=${PRETRAINED_GATE:-0.02}               # max |change| of CE's held-out non-personal accuracy over them
  sweeps=$root/hydra/claims_pretrained
  out=$root/reports/claims_pretrained
  stamp "pretrained: shared CE start, $start_steps steps"
  time pc run experiment=claims_pretrained loss=ce seed=0 "train.steps=$start_steps" "hydra.run.dir=$sweeps/start"
  start=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["checkpoint"])' "$sweeps/start/artifacts.json")
  stamp "CE, $steps more steps from checkpoint $start, seeds $seeds"
  time pc run -m experiment=claims_pretrained "checkpoint=$start" loss=ce "seed=$seeds" "train.steps=$steps" \
    "hydra.sweep.dir=$sweeps/ce"
  stamp "plateau gate: |change| of CE's held-out non-personal accuracy < $gate"
  python "$here/plateau_gate.py" "$sweeps/start" "$sweeps/ce" --threshold "$gate" --out "$out/gate.md"
  stamp "PerCE, PerCE clip_min=1 and EntCE from the same start"
  time pc run -m experiment=claims_pretrained "checkpoint=$start" loss=perce,entce "seed=$seeds" \
    "train.steps=$steps" "hydra.sweep.dir=$sweeps/methods"
  time pc run -m experiment=claims_pretrained "checkpoint=$start" loss=perce loss.clip_min=1 "seed=$seeds" \
    "train.steps=$steps" "hydra.sweep.dir=$sweeps/perce_upweight"
  plots=persona_recall,persona_leakage,reference_nll,nonpersonal_token_acc,rougeL
  report pretrained "$sweeps/ce" "$sweeps/methods" "$sweeps/perce_upweight"
  { echo; cat "$out/gate.md"; } >> "$out/report.md"
fi
stamp done
