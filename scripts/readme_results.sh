#!/usr/bin/env bash
# Re-measures every number and plot of the README's "What the tool has found so far" section, in order, printing wall times.
# Idempotent: finished jobs are skipped on a rerun (artifacts are fingerprinted).
#   bash scripts/readme_results.sh [tiny|real|all]
set -euo pipefail
which=${1:-all}
pc() { python -m percontrast_cli.cli "$@"; }
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }

if [[ $which == tiny || $which == all ]]; then
  stamp "tiny: CE vs PerCE, 3 seeds"
  time pc run -m loss=ce,perce seed=0,1,2 hydra.sweep.dir=outputs/hydra/seeds
  stamp "tiny: PerCE alpha 0.5, 2 and the baselines, 3 seeds"
  time pc run -m loss=perce loss.alpha=0.5,2 seed=0,1,2 hydra.sweep.dir=outputs/hydra/alphas
  time pc run -m loss=lossce,entce,dft seed=0,1,2 hydra.sweep.dir=outputs/hydra/baselines
  pc report 'report.evals=[outputs/hydra/seeds,outputs/hydra/alphas,outputs/hydra/baselines]' \
    report.out_dir=outputs/reports/sweep
fi

if [[ $which == real || $which == all ]]; then
  stamp "SmolLM2 + LoRA: CE, PerCE, PerCE normalize=weights (make demo-real + one point)"
  time pc run -m experiment=real_demo loss=ce,perce hydra.sweep.dir=outputs/hydra/demo-real
  time pc run -m experiment=real_demo loss=perce loss.normalize=weights hydra.sweep.dir=outputs/hydra/demo-real-norm
  pc report 'report.evals=[outputs/hydra/demo-real,outputs/hydra/demo-real-norm]' \
    report.out_dir=outputs/reports/demo-real
fi
stamp done
