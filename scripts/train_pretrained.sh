#!/usr/bin/env bash
# Re-create checkpoints shipped in assets/checkpoints with the shipped configs, then print the sha256 and size to
# record in pointgeo/hub.py (CHECKPOINTS). CPU: the classifiers and the potential about 10 minutes on 2 cores,
# RoITr about 45 minutes more at one thread (skip it with SKIP_ROITR=1). Run from the checkout, whose ../shared/data
# holds the samples the potential and RoITr train on.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=.venv/bin/pointgeo

# export NAME RUN_DIR: the best checkpoint of the run in RUN_DIR, slimmed, as assets/checkpoints/<name>-<sha8>.ckpt
export_best() {
  local best
  best=$(ls "$2"/lightning_logs/version_0/checkpoints/best-*.ckpt)
  .venv/bin/python - "$best" "$1" <<'PY'
import sys
from pathlib import Path
from pointgeo.hub import export_checkpoint
src, name = Path(sys.argv[1]), sys.argv[2]
tmp = Path("assets/checkpoints") / f"{name.replace('.', '-')}.tmp.ckpt"
sha, size = export_checkpoint(src, tmp)
dst = tmp.with_name(f"{name.replace('.', '-')}-{sha[:8]}.ckpt")
tmp.replace(dst)
print(f"{name}  sha256={sha}  size={size}  file={dst}")
PY
}

for model in tinvnn_pointnet pointnet; do
  out="runs/pretrained/$model"
  rm -rf "$out"
  "$PG" train --config "synthetic/cls-$model-z" --trainer.default_root_dir "$out"
  export_best "$model.synthetic_z" "$out"
done
# The pretrained potential: PaiNN on the real SpookyNet CH2 / Ag3 rows (a few minutes). Its registry metrics are the
# test errors that tests/test_hub_potentials.py re-measures.
out="runs/pretrained/painn-spookynet"
rm -rf "$out"
"$PG" train --config molecules/spookynet-painn --trainer.max_epochs 10 --trainer.default_root_dir "$out"
export_best painn.spookynet "$out"
# The registration model: RoITr on pairs cut from the shared 3DMatch fragments and ModelNet40 shapes (its 2700
# CPU-second budget at one thread). Its registry metrics are the held-out test figures the run prints, which
# tests/test_hub_registration.py re-measures; the CPU-time budget makes the stopping step, and so the weights,
# depend on the machine.
if [ -z "${SKIP_ROITR:-}" ]; then
  out="runs/pretrained/roitr-pairs_cpu_dev"
  rm -rf "$out"
  OMP_NUM_THREADS=1 "$PG" train --config threedmatch/roitr-cpu --trainer.default_root_dir "$out"
  export_best roitr.pairs_cpu_dev "$out"
fi
