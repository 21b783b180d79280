"""``pointgeo view``: watch a model's predictions on a shape and on random SO(3) rotations of it.

The sample is a user's file (``--file``) or a test shape of the model's own dataset (``--index``). Interactive mode
opens an Open3D window; ``--snapshot out.png`` renders the same scene headless (see :mod:`pointgeo.viz.snapshot`).
For a checkpoint of the potential task the sample is a molecule (any structure file ``ase.io.read`` reads, or a
row of its molecule dataset) drawn with its predicted (and reference) force arrows (:mod:`pointgeo.viz.molecules`).

For a part-segmentation checkpoint every point is coloured (``--colour prediction``: its predicted part, ``truth``:
its labelled part, ``error``: right/wrong), and for a network that predicts its own partition (APEN) ``--colour
partition`` shows the predicted pieces (:mod:`pointgeo.viz.scene`).

Keys in the window: ``N`` new random rotations, ``Right``/``Left`` next/previous sample, ``T`` toggle colouring
(prediction → ground truth → error → partition, where available), ``H`` show/hide help.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import torch

from pointgeo.viz.molecules import MoleculeView, build_molecule_views, molecule_title
from pointgeo.viz.scene import ColourMode, View, build_views, title, view_colours

HELP = ("N: new rotations   Left/Right: previous/next sample   T: colour by prediction / truth / error "
        "(/ partition)   H: help")
MODES: tuple[ColourMode, ...] = ("prediction", "truth", "error", "partition")


@dataclass
class ViewerState:
    """Everything the viewer shows and how to move through it."""

    task: Any
    class_names: list[str]
    samples: Any  # a dataset of dict samples, or a list with one user sample
    index: int = 0
    n_rotations: int = 3
    seed: int = 0
    mode: ColourMode = "prediction"
    up_axis: str = "z"
    views: list[View] = field(default_factory=list)
    num_parts: int | None = None
    """A segmentation checkpoint's number of parts (``None`` for a classifier)."""

    @property
    def label(self) -> int | None:
        sample = self.samples[self.index]
        return int(sample["label"]) if "label" in sample else None

    @property
    def truth(self) -> int | Any | None:
        """The ground truth colours compare with: the class, or a segmentation's ``(N,)`` labelled parts."""
        if self.num_parts is None:
            return self.label
        sample = self.samples[self.index]
        return sample["seg"].numpy() if "seg" in sample else None

    @property
    def num_colours(self) -> int:
        return self.num_parts or len(self.class_names)

    @property
    def modes(self) -> tuple[ColourMode, ...]:
        """The colourings this sample can show (ground truth and a predicted partition only where known)."""
        known = ("prediction",) + (("truth", "error") if self.truth is not None else ())
        return known + (("partition",) if self.views and self.views[0].partition is not None else ())

    def refresh(self) -> None:
        sample = self.samples[self.index]
        category = None if self.num_parts is None else int(sample["category"])
        self.views = build_views(self.task, sample["pos"], sample.get("normal"), self.n_rotations, self.seed,
                                 category=category)
        if self.mode not in self.modes:
            raise ValueError(f"--colour {self.mode} is not available for this model and sample; choose from "
                             f"{', '.join(self.modes)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pointgeo view``."""
    parser.add_argument("model", help="pretrained name, checkpoint path or file:// URL")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", help="a point or mesh file (.ply .pcd .xyz .txt .off .obj .stl); for a potential, "
                        "any structure file ase.io.read reads (.xyz .extxyz .traj .cif ...)")
    source.add_argument("--index", type=int, default=0, help="test shape of the model's dataset (default 0)")
    parser.add_argument("--n-rotations", type=int, default=3, help="random SO(3) rotations shown beside the shape")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--charge", type=int, help="total charge of a --file molecule (default: atoms.info or 0)")
    parser.add_argument("--spin", type=int, help="spin multiplicity 2S+1 of a --file molecule (default: "
                        "atoms.info or 1)")
    parser.add_argument("--colour", "--color", choices=MODES, default="prediction",
                        help="prediction, truth, error (segmentation: per point, by part), partition (a network "
                             "predicting its own partition, e.g. apen)")
    parser.add_argument("--snapshot", help="render to this PNG without a display and exit")
    parser.add_argument("--size", default="1200x400", help="snapshot size WIDTHxHEIGHT")
    parser.add_argument("--renderer", choices=["auto", "open3d", "matplotlib"], default="auto")


@dataclass
class MoleculeState:
    """A potential, its molecule(s) and the copies shown (:mod:`pointgeo.viz.molecules`)."""

    task: Any
    samples: Any  # a molecule dataset, or a list with the user's molecule
    index: int = 0
    n_rotations: int = 3
    seed: int = 0
    views: list[MoleculeView] = field(default_factory=list)
    up_axis: str = "z"
    mode: str = "element / force"  # what the colours show (the window's title)

    def refresh(self) -> None:
        self.views = build_molecule_views(self.task, self.samples[self.index], self.n_rotations, self.seed)


def load_molecule_state(ns: argparse.Namespace, task: Any, data: dict[str, Any]) -> MoleculeState:
    """The potential ``task`` and the molecule the options name: ``--file`` (read by ASE) or row ``--index`` of
    the test split of the checkpoint's molecule dataset."""
    from pointgeo.viz.molecules import read_molecule

    if ns.file:
        samples: Any = [read_molecule(ns.file, ns.charge, ns.spin)]
        index = 0
    else:
        if not data.get("_class_path"):
            raise ValueError(f"{ns.model} records no datamodule (it was not trained by pointgeo train); give a "
                             f"molecule with --file")
        _, samples = load_test_split(data, ns.index)
        index = ns.index
    state = MoleculeState(task, samples, index, ns.n_rotations, ns.seed)
    state.refresh()
    return state


def load_test_split(data: dict[str, Any], index: int) -> tuple[Any, Any]:
    """The datamodule rebuilt from a checkpoint's stored ``data`` settings and its unrotated test split, after
    checking that ``index`` is one of its samples."""
    from pointgeo.datamodules.settings import build_datamodule

    dm = build_datamodule(data, None)
    dm.set_test_rotation("none")
    dm.prepare_data()
    dm.setup("test")
    samples = dm.dataset("test")
    if not 0 <= index < len(samples):
        raise ValueError(f"--index {index} is outside the test split (0 .. {len(samples) - 1})")
    return dm, samples


def load_state(ns: argparse.Namespace) -> ViewerState | MoleculeState:
    """Load the model and the sample(s) the options name (molecules for a checkpoint of the potential task)."""
    from pointgeo.datamodules.base import normalize_unit_sphere
    from pointgeo.datamodules.settings import build_datamodule
    from pointgeo.hub import fetch, from_pretrained, load_checkpoint

    if ns.n_rotations < 0:
        raise ValueError(f"--n-rotations must be >= 0, got {ns.n_rotations}")
    path = fetch(ns.model, progress=False)
    ckpt = load_checkpoint(path)
    task = from_pretrained(str(path)).eval()
    data = ckpt.get("datamodule_hyper_parameters", {})
    if ckpt.get("pointgeo", {}).get("task") == "potential":
        return load_molecule_state(ns, task, data)
    segmentation = ckpt.get("pointgeo", {}).get("task") == "segmentation"
    if ns.file:
        from pointgeo.viz.io import read_points

        pos, normal = read_points(ns.file, num_points=data.get("num_points", 1024), seed=ns.seed)
        pos = normalize_unit_sphere(pos[None])[0]
        if task.hparams.use_normals and normal is None:
            raise ValueError(f"{ns.model} needs normals but {ns.file} has none")
        sample = {"pos": torch.from_numpy(pos)}
        if task.hparams.use_normals:
            sample["normal"] = torch.from_numpy(normal)
        samples: Any = [sample]
        dm = build_datamodule(data, None)
        index = 0
        if segmentation:
            if dm.num_categories != 1:
                raise ValueError(f"{ns.model} segments {dm.num_categories} categories; a --file has none: view a "
                                 f"test shape with --index instead")
            sample["category"] = torch.tensor(0)
    else:
        dm, samples = load_test_split(data, ns.index)
        index = ns.index
    if task.hparams.num_classes != dm.num_classes:
        raise ValueError(f"{ns.model} predicts {task.hparams.num_classes} classes but its data has {dm.num_classes}")
    state = ViewerState(task, dm.class_names, samples, index, ns.n_rotations, ns.seed, ns.colour, dm.up_axis,
                        num_parts=task.hparams.num_parts if segmentation else None)
    state.refresh()
    return state


def main(ns: argparse.Namespace) -> None:
    """Run ``pointgeo view`` with parsed options."""
    state = load_state(ns)
    if isinstance(state, MoleculeState) and ns.snapshot:
        from pointgeo.viz.snapshot import render_molecule_snapshot

        width, height = (int(v) for v in ns.size.lower().split("x"))
        used = render_molecule_snapshot(state.views, ns.snapshot, size=(width, height), renderer=ns.renderer)
        print(f"snapshot: {ns.snapshot} (renderer: {used})")
        for i, view in enumerate(state.views):
            print("  " + molecule_title(view, i).replace("\n", ": "))
        return
    if ns.snapshot:
        from pointgeo.viz.snapshot import render_snapshot

        width, height = (int(v) for v in ns.size.lower().split("x"))
        used = render_snapshot(state.views, state.class_names, ns.snapshot, label=state.truth, mode=state.mode,
                               size=(width, height), renderer=ns.renderer, up_axis=state.up_axis,
                               num_colours=state.num_colours)
        print(f"snapshot: {ns.snapshot} (renderer: {used})")
        for i, view in enumerate(state.views):
            print("  " + title(view, state.class_names, i).replace("\n", ": "))
        return
    run_window(state)


def run_window(state: ViewerState | MoleculeState) -> None:
    """The interactive Open3D window (needs a display): point clouds, or a molecule's atoms and force arrows."""
    import numpy as np
    import open3d as o3d
    import open3d.visualization.gui as gui
    import open3d.visualization.rendering as rendering

    from pointgeo.geometry import axis_index
    from pointgeo.viz.molecules import molecule_scene
    from pointgeo.viz.render_open3d import molecule_material, molecule_meshes

    app = gui.Application.instance
    app.initialize()
    window = app.create_window("pointgeo view", 1400, 600)
    widget = gui.SceneWidget()
    widget.scene = rendering.Open3DScene(window.renderer)
    widget.scene.set_background([1, 1, 1, 1])
    widget.scene.view.set_post_processing(False)  # true colours, white background
    help_label = gui.Label(HELP)
    window.add_child(widget)
    window.add_child(help_label)
    material = rendering.MaterialRecord()
    material.shader = "defaultUnlit"
    material.point_size = 4.0
    labels: list[Any] = []

    def draw() -> None:
        widget.scene.clear_geometry()
        for label in labels:
            widget.remove_3d_label(label)
        labels.clear()
        if isinstance(state, MoleculeState):
            for name, mesh in molecule_meshes(molecule_scene(state.views)):
                widget.scene.add_geometry(name, mesh, molecule_material(name))
        for i, view in enumerate(state.views):
            anchor = np.array([2.4 * i - 0.6, 0.0, 0.0]) + 1.3 * np.eye(3)[axis_index(state.up_axis)]
            if isinstance(state, MoleculeState):
                labels.append(widget.add_3d_label(anchor, molecule_title(view, i)))
                continue
            cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(view.pos.astype(np.float64) + [2.4 * i, 0, 0]))
            colour = view_colours(view, state.truth, state.mode, state.num_colours)
            cloud.colors = o3d.utility.Vector3dVector(np.array(np.broadcast_to(colour, view.pos.shape),
                                                               dtype=np.float64))  # a writeable copy
            widget.scene.add_geometry(f"cloud_{i}", cloud, material)
            labels.append(widget.add_3d_label(anchor, title(view, state.class_names, i)))
        bounds = widget.scene.bounding_box
        widget.setup_camera(30, bounds, bounds.get_center())
        up = np.eye(3)[axis_index(state.up_axis)]
        side = np.eye(3)[2] if axis_index(state.up_axis) != 2 else -np.eye(3)[1]
        centre = bounds.get_center()
        widget.scene.camera.look_at(centre, centre + side * 1.4 * bounds.get_max_extent(), up)
        window.title = f"pointgeo view — sample {state.index}, colour: {state.mode}"

    def on_layout(context: Any) -> None:
        rect = window.content_rect
        widget.frame = rect
        help_label.frame = gui.Rect(rect.x + 8, rect.y + 8, rect.width - 16, 24)

    def on_key(event: Any) -> Any:
        if event.type != gui.KeyEvent.Type.DOWN:
            return gui.Widget.EventCallbackResult.IGNORED
        if event.key == gui.KeyName.N:
            state.seed += 1
        elif event.key == gui.KeyName.RIGHT:
            state.index = (state.index + 1) % len(state.samples)
        elif event.key == gui.KeyName.LEFT:
            state.index = (state.index - 1) % len(state.samples)
        elif event.key == gui.KeyName.T and isinstance(state, MoleculeState):
            return gui.Widget.EventCallbackResult.IGNORED
        elif event.key == gui.KeyName.T:
            modes = state.modes
            state.mode = modes[(modes.index(state.mode) + 1) % len(modes)] if state.mode in modes else "prediction"
        elif event.key == gui.KeyName.H:
            help_label.visible = not help_label.visible
            return gui.Widget.EventCallbackResult.HANDLED
        else:
            return gui.Widget.EventCallbackResult.IGNORED
        state.refresh()
        draw()
        return gui.Widget.EventCallbackResult.HANDLED

    window.set_on_layout(on_layout)
    widget.set_on_key(on_key)
    draw()
    app.run()


def cli(args: list[str]) -> None:
    """``pointgeo view`` entry point: parse, run, and turn bad input into one message (a registration pair when
    ``--target`` is given: :mod:`pointgeo.viz.pairs`)."""
    from pointgeo.viz import pairs

    pair = pairs.is_pair_command(args)
    description = (pairs.__doc__ if pair else __doc__).split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="pointgeo view", description=description)
    (pairs.add_pair_arguments if pair else add_arguments)(parser)
    ns = parser.parse_args(args)
    from pointgeo.datamodules.readers import DatasetFileError

    try:
        (pairs.pair_main if pair else main)(ns)
    except (KeyError, ValueError, FileNotFoundError, DatasetFileError) as exc:
        raise SystemExit(f"pointgeo view: {exc.args[0] if exc.args else exc}") from exc


if __name__ == "__main__":
    import sys

    cli(sys.argv[1:])
