"""Lightning DDP with two CPU processes (gloo, ``ddp_spawn``) over the molecule datamodule: every rank reads the
LMDB shards itself and gets the same number of atom-budget batches, of matched sizes step by step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl

from pointgeo.datamodules import MoleculeDataModule

from test_molecules_datamodule import ElementEnergyModel, synthetic_split


class RecordingModel(ElementEnergyModel):
    """Writes the atom totals and rows of its training batches to ``<folder>/rank<r>.json`` after each epoch."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def on_train_epoch_end(self) -> None:
        import json

        path = Path(self.folder) / f"rank{self.global_rank}_epoch{self.current_epoch}.json"
        path.write_text(json.dumps(self.seen))
        self.seen = []


def test_two_process_ddp_gets_equal_numbers_of_balanced_batches(tmp_path: Path) -> None:
    import json

    folder, mols = synthetic_split(tmp_path / "set", n=60, metadata=False)  # read lazily from LMDB by each rank
    dm = MoleculeDataModule(str(folder), max_atoms=30, val_fraction=0.0, test_fraction=0.0)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False, inference_mode=False, limit_val_batches=0,
                         default_root_dir=str(tmp_path))
    trainer.fit(RecordingModel(str(tmp_path)), datamodule=dm)
    ranks = [json.loads((tmp_path / f"rank{r}_epoch0.json").read_text()) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) > 1  # the same number of steps on both ranks
    natoms = {i: len(m["numbers"]) for i, m in enumerate(mols)}
    totals = np.array([[sum(natoms[i] for i in batch) for batch in rank] for rank in ranks])
    assert totals.max() <= 30
    assert np.sort(np.abs(totals[0] - totals[1]))[-2] <= 3  # matched sizes, step by step
    assert {i for rank in ranks for batch in rank for i in batch} == set(range(60))
