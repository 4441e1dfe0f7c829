"""Compiled weight kernels (C sources, numpy reference, dispatch): being built."""
