"""Pure tensor geometry shared by every pointgeo model: rotations, neighbour search, sampling, frames, normals,
rigid transforms (estimation from correspondences, voxel downsampling), and the rigid motion of a batch by its
fields' declared kinds (also pairs of clouds that move independently).

Nothing here knows about parameters, training, files or Lightning. Every model uses these functions; none
re-implements them.
"""

from pointgeo.geometry.checks import check_features, check_points
from pointgeo.geometry.fields import (
    CRYSTAL_FIELDS,
    FIELD_KINDS,
    FRAGMENT_PAIR_FIELDS,
    MOLECULE_FIELDS,
    POINT_CLOUD_FIELDS,
    FieldKind,
    FieldSpec,
    PairFieldSpec,
    apply_pair_motion,
    apply_rigid_motion,
)
from pointgeo.geometry.frame_gradient import attach_frame_gradient
from pointgeo.geometry.frames import canonical_frame, frame_from_directions, principal_axes, sign_flips
from pointgeo.geometry.lattice import (
    cart_to_frac,
    change_cell_basis,
    frac_to_cart,
    lattice_features,
    lattice_matrix_to_params,
    lattice_params_to_matrix,
    lattice_volume,
    minimum_image,
    periodic_radius_graph,
)
from pointgeo.geometry.neighbors import ball_query, index_points, knn
from pointgeo.geometry.neighbor_list import NeighborList, neighbor_list
from pointgeo.geometry.normals import estimate_normals
from pointgeo.geometry.rigid import (
    estimate_rigid_transform,
    invert_rigid,
    matrix_to_quaternion,
    random_rigid_motions,
    rigid_matrix,
    rotation_error_degrees,
    transform_points,
    translation_error,
    voxel_downsample,
)
from pointgeo.geometry.piecewise import apply_piecewise_motion, piecewise_motion
from pointgeo.geometry.rotations import (
    RotationMode,
    angle_sweep,
    axis_angle_to_matrix,
    axis_index,
    quaternion_to_matrix,
    random_rotations,
    rotation_defect,
    random_rotations_about_axis,
    rotate,
    rotations_about_axis,
    sample_rotations,
)
from pointgeo.geometry.sampling import farthest_from_centroid, farthest_point_sampling
from pointgeo.geometry.ties import invariant_rank, selection_rank

__all__ = [
    "CRYSTAL_FIELDS",
    "FIELD_KINDS",
    "FRAGMENT_PAIR_FIELDS",
    "MOLECULE_FIELDS",
    "POINT_CLOUD_FIELDS",
    "FieldKind",
    "FieldSpec",
    "PairFieldSpec",
    "apply_pair_motion",
    "apply_piecewise_motion",
    "apply_rigid_motion",
    "estimate_rigid_transform",
    "invert_rigid",
    "matrix_to_quaternion",
    "random_rigid_motions",
    "rigid_matrix",
    "rotation_error_degrees",
    "transform_points",
    "translation_error",
    "voxel_downsample",
    "cart_to_frac",
    "change_cell_basis",
    "frac_to_cart",
    "lattice_features",
    "lattice_matrix_to_params",
    "lattice_params_to_matrix",
    "lattice_volume",
    "minimum_image",
    "periodic_radius_graph",
    "piecewise_motion",
    "RotationMode",
    "angle_sweep",
    "attach_frame_gradient",
    "axis_angle_to_matrix",
    "axis_index",
    "ball_query",
    "check_features",
    "canonical_frame",
    "check_points",
    "estimate_normals",
    "farthest_from_centroid",
    "farthest_point_sampling",
    "frame_from_directions",
    "index_points",
    "invariant_rank",
    "knn",
    "NeighborList",
    "neighbor_list",
    "principal_axes",
    "quaternion_to_matrix",
    "random_rotations",
    "rotation_defect",
    "random_rotations_about_axis",
    "rotate",
    "rotations_about_axis",
    "sample_rotations",
    "selection_rank",
    "sign_flips",
]
