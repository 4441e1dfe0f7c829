"""The FPGA side (edgekit.fpga): the PYNQ-style driver of the ek_top IP (`driver`), device back ends
(`devices`: memory-backed for register-traffic tests, C simulation through ctypes; the board through
pynq), buffers (`buffers`), the host loop (`host`), `--backend fpga` (`backend`), the .hwh check (`hwh`),
the Vivado flow (`flow`) and the cycle/resource estimate (`estimate`)."""
