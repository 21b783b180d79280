"""A small MACE trained on the same split, with the same loss and the same CPU-time budget as pointgeo's potentials.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/train_mace_reference.py --data DIR [--config molecules/xtb-painn]
        [--cpu-seconds 300] [--compare runs/.../last.ckpt ...]

The split is pointgeo's: the ``data`` section of ``--config`` (a shipped config name or a YAML path; default the
xTB configs' one) builds :class:`pointgeo.datamodules.MoleculeDataModule` with ``path = DIR``, so MACE reads the
same training rows, batches (atom budget), per-element energy references (fitted on the training split; MACE's
``atomic_energies`` are zero and it learns the same referenced energy) and validation rows as ``pointgeo train``.

MACE (``mace-torch``, the ``bench`` extra; built here without weights): 2 interactions, hidden irreps
``32x0e + 32x1o``, ``max_ell`` 2, correlation 3, 8 Bessel functions, cutoff 5 Å, ``avg_num_neighbors`` measured on
the training split. It embeds the elements only: total charge and spin, which pointgeo's networks embed, are not
inputs of this MACE (sets with charge and spin variants of one geometry put it at a disadvantage on energies).
Loss as :class:`pointgeo.tasks.PotentialTask`: ``10 · mean_b |ΔE_b| / N_b + 10 · mean_i ‖ΔF_i‖``, AdamW at a constant
learning rate (``--lr``, default 5e-4 as the xTB configs), gradients clipped at norm 10. Training stops once the
training steps (forward, backward, optimizer step) used ``--cpu-seconds`` of process CPU time, counted as
:class:`pointgeo.lightning_cli.CpuTimeBudget` counts it; run single-threaded for a comparison.

It prints MACE's validation energy MAE (meV, meV/atom) and force MAE (meV/Å) before and after training, then, for
each ``--compare`` checkpoint (a pointgeo potential, e.g. the ``last.ckpt`` of an xTB run), the same MAEs measured
here on the same validation rows and the ratio pointgeo / MACE (> 1: pointgeo's error is larger).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402,F401  (first: pointgeo's CPU memory settings before torch starts)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402

from pointgeo.configs import shipped_config  # noqa: E402
from pointgeo.datamodules.settings import build_datamodule  # noqa: E402
from pointgeo.geometry import neighbor_list  # noqa: E402
from pointgeo.nn.atoms import graph_index  # noqa: E402
from pointgeo.tasks.potential import predict_potential, target_energy  # noqa: E402

CUTOFF = 5.0
ENERGY_WEIGHT = FORCE_WEIGHT = 10.0


def datamodule(config: str, data: str):
    """pointgeo's datamodule of ``config``'s data section, reading ``data``; set up for fitting."""
    path = Path(config) if Path(config).suffix in (".yaml", ".yml") else shipped_config(config)
    spec = yaml.safe_load(Path(path).read_text())["data"]
    spec["init_args"] = {**spec.get("init_args", {}), "path": data}
    dm = build_datamodule({}, spec)
    dm.setup("fit")
    return dm


def elements_of(dm) -> list[int]:
    """The atomic numbers of the training and validation rows, sorted."""
    found: set[int] = set()
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        for batch in loader:
            found.update(batch.z.unique().tolist())
    return sorted(found)


def mean_neighbours(dm) -> float:
    """Mean number of neighbours within the cutoff on the training split (MACE's ``avg_num_neighbors``)."""
    edges = atoms = 0
    for batch in dm.train_dataloader():
        edges += neighbor_list(batch.pos, CUTOFF, graph_index(batch)[0]).edge_index.shape[1]
        atoms += batch.num_nodes
    return edges / atoms


def build_mace(elements: list[int], avg_num_neighbors: float) -> torch.nn.Module:
    torch.serialization.add_safe_globals([slice])  # e3nn loads its packaged Wigner constants, which hold slices
    from e3nn import o3
    from mace import modules

    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.MACE(r_max=CUTOFF, num_bessel=8, num_polynomial_cutoff=5, max_ell=2, interaction_cls=block,
                        interaction_cls_first=block, num_interactions=2, num_elements=len(elements),
                        hidden_irreps=o3.Irreps("32x0e + 32x1o"), MLP_irreps=o3.Irreps("16x0e"), gate=F.silu,
                        atomic_energies=np.zeros(len(elements)), avg_num_neighbors=avg_num_neighbors,
                        atomic_numbers=elements, correlation=3).float()


class MaceAdapter(torch.nn.Module):
    """MACE called as a pointgeo potential network: ``net(batch) -> (energy (B,), forces (N, 3))`` of a PyG batch,
    on pointgeo's radius graph. ``predict_potential`` then takes its forces as given (MACE differentiates itself)."""

    def __init__(self, mace: torch.nn.Module, elements: list[int]) -> None:
        super().__init__()
        self.mace = mace
        self.register_buffer("elements", torch.tensor(elements))

    def forward(self, batch):
        index, num_graphs = graph_index(batch)
        pos = batch.pos
        nl = neighbor_list(pos.detach(), CUTOFF, index)
        counts = torch.bincount(index, minlength=num_graphs)
        edges = nl.edge_index.shape[1]
        data = {"positions": pos, "edge_index": nl.edge_index[[1, 0]], "batch": index,
                "node_attrs": F.one_hot(torch.searchsorted(self.elements, batch.z), len(self.elements)).to(pos.dtype),
                "shifts": pos.new_zeros(edges, 3), "unit_shifts": pos.new_zeros(edges, 3),
                "cell": pos.new_zeros(3 * num_graphs, 3),
                "ptr": torch.cat([counts.new_zeros(1), counts.cumsum(0)])}
        out = self.mace(data, training=self.training, compute_force=True)
        return out["energy"], out["forces"]


def loss_of(net: torch.nn.Module, batch) -> torch.Tensor:
    """pointgeo's potential loss (:class:`pointgeo.tasks.PotentialTask`, weights 10 and 10)."""
    out = predict_potential(net, batch, create_graph=True)
    index, num_graphs = graph_index(batch)
    natoms = torch.bincount(index, minlength=num_graphs)
    loss_e = ((out["energy"] - target_energy(batch)).abs() / natoms).mean()
    loss_f = (out["forces"] - batch.forces).norm(dim=-1).mean()
    return ENERGY_WEIGHT * loss_e + FORCE_WEIGHT * loss_f


def validate(net: torch.nn.Module, dm) -> dict[str, float]:
    """Validation energy MAE (meV), per atom (meV/atom) and force MAE per component (meV/Å)."""
    was_training = net.training
    net.eval()
    e_abs = e_abs_atom = f_abs = 0.0
    structures = components = 0
    for batch in dm.val_dataloader():
        out = predict_potential(net, batch)
        index, num_graphs = graph_index(batch)
        err = (out["energy"].detach().double() - target_energy(batch).double()).abs()
        e_abs += float(err.sum())
        e_abs_atom += float((err / torch.bincount(index, minlength=num_graphs)).sum())
        f_abs += float((out["forces"].detach().double() - batch.forces.double()).abs().sum())
        structures += num_graphs
        components += batch.forces.numel()
    net.train(was_training)
    return {"energy_mae": 1e3 * e_abs / structures, "energy_mae_per_atom": 1e3 * e_abs_atom / structures,
            "force_mae": 1e3 * f_abs / components}


def train(net: torch.nn.Module, dm, cpu_seconds: float, lr: float) -> tuple[int, int, float]:
    """Train until the training steps used ``cpu_seconds`` of process CPU time: ``(steps, epochs, CPU s used)``."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    net.train()
    loader = dm.train_dataloader()
    used, steps, epoch = 0.0, 0, 0
    while used < cpu_seconds:
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            start = time.process_time()
            loss = loss_of(net, batch)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            used += time.process_time() - start
            steps += 1
            if used >= cpu_seconds:
                break
        epoch += 1
    return steps, epoch, used


def compare(path: str, dm) -> tuple[str, dict[str, float]]:
    """``(label, MAEs)`` of a pointgeo potential checkpoint on the validation rows; the label names its network."""
    from pointgeo.hub import from_pretrained

    task = from_pretrained(path, progress=False)
    direct = (task.hparams.network_kwargs or {}).get("direct_forces", False)
    return f"{task.hparams.network}{' (direct forces)' if direct else ''}", validate(task.net.float(), dm)


def row(name: str, m: dict[str, float], ref: dict[str, float] | None = None) -> str:
    cells = [f"{m['energy_mae']:9.1f}", f"{m['energy_mae_per_atom']:8.2f}", f"{m['force_mae']:8.1f}"]
    if ref is not None:
        cells += [f"{m[k] / ref[k]:6.2f}" for k in ("energy_mae", "energy_mae_per_atom", "force_mae")]
    return f"{name:<34} " + " ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="the training split folder or file (e.g. data/xtb_g2/train)")
    parser.add_argument("--config", default="molecules/xtb-painn", help="config whose data section builds the split")
    parser.add_argument("--cpu-seconds", type=float, default=300.0, help="CPU-time budget of the training steps")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", nargs="*", default=[], help="pointgeo potential checkpoints to measure beside")
    parser.add_argument("--save", help="write the trained MACE's weights here (then --load skips the training)")
    parser.add_argument("--load", help="MACE weights written by --save: measure them instead of training")
    args = parser.parse_args()

    dm = datamodule(args.config, args.data)
    elements = elements_of(dm)
    torch.manual_seed(args.seed)
    net = MaceAdapter(build_mace(elements, mean_neighbours(dm)), elements)
    print(f"split: {len(dm.dataset('train'))} train / {len(dm.dataset('val'))} val structures; elements {elements}; "
          f"{sum(p.numel() for p in net.parameters())} MACE parameters; torch threads {torch.get_num_threads()}")
    start = validate(net, dm)
    if args.load:
        net.load_state_dict(torch.load(args.load, weights_only=True))
        print(f"MACE weights from {args.load} (not trained here)")
    else:
        steps, epochs, used = train(net, dm, args.cpu_seconds, args.lr)
        print(f"MACE trained {steps} steps ({epochs} epochs started) in {used:.1f} CPU-s of training steps")
        if args.save:
            tmp = Path(args.save).with_name(f".{Path(args.save).name}.tmp")
            torch.save(net.state_dict(), tmp)
            tmp.replace(args.save)
    end = validate(net, dm)
    header = f"{'validation MAE':<34} {'E (meV)':>9} {'meV/atom':>8} {'F meV/Å':>8}"
    print(header + ("  ratios to MACE (E, E/atom, F)" if args.compare else ""))
    print(row("mace (start)", start))
    print(row("mace (end)", end))
    for path in args.compare:
        label, maes = compare(path, dm)
        print(row(label, maes, end))


if __name__ == "__main__":
    main()
