"""Inspection: the Open3D viewer of predictions under rotation, headless snapshots, reading users' files.

Importing this package loads neither Open3D nor a model; the functions that need them import them.
"""
