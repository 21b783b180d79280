#!/usr/bin/env bash
# Re-create the checkpoints shipped in assets/checkpoints with the shipped configs, then print the sha256 and size
# to record in pointgeo/hub.py (CHECKPOINTS). CPU, about 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=.venv/bin/pointgeo
for model in tinvnn_pointnet pointnet; do
  out="runs/pretrained/$model"
  rm -rf "$out"
  "$PG" train --config "synthetic/cls-$model-z" --trainer.default_root_dir "$out"
  best=$(ls "$out"/lightning_logs/version_0/checkpoints/best-*.ckpt)
  .venv/bin/python - "$best" "$model" <<'PY'
import sys
from pathlib import Path
from pointgeo.hub import export_checkpoint
src, model = Path(sys.argv[1]), sys.argv[2]
tmp = Path("assets/checkpoints") / f"{model}-synthetic_z.tmp.ckpt"
sha, size = export_checkpoint(src, tmp)
dst = tmp.with_name(f"{model}-synthetic_z-{sha[:8]}.ckpt")
tmp.replace(dst)
print(f"{model}.synthetic_z  sha256={sha}  size={size}  file={dst}")
PY
done
# The pretrained potential: PaiNN on the real SpookyNet CH2 / Ag3 rows (CPU, a few minutes; run from the checkout,
# whose ../shared/data holds the samples). Its registry metrics are the test errors that tests/test_hub_potentials.py
# re-measures.
out="runs/pretrained/painn-spookynet"
rm -rf "$out"
"$PG" train --config molecules/spookynet-painn --trainer.max_epochs 10 --trainer.default_root_dir "$out"
best=$(ls "$out"/lightning_logs/version_0/checkpoints/best-*.ckpt)
.venv/bin/python - "$best" <<'PY'
import sys
from pathlib import Path
from pointgeo.hub import export_checkpoint
tmp = Path("assets/checkpoints") / "painn-spookynet.tmp.ckpt"
sha, size = export_checkpoint(Path(sys.argv[1]), tmp)
dst = tmp.with_name(f"painn-spookynet-{sha[:8]}.ckpt")
tmp.replace(dst)
print(f"painn.spookynet  sha256={sha}  size={size}  file={dst}")
PY
