"""Vitis build flow, PYNQ driver and cycle/resource model (edgekit.fpga). Not built yet: see ARCHITECTURE.md."""
