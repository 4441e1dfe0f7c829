"""HLS C++ for TeLLMe-style ternary accelerators (edgekit.hls).

The logic lives in `include/*.h` (TLMM engine, norms and int8 quantization, attention, the layer) and
`src/ek_top.cpp` (the AXI top function); Python fills only the config struct and data files
(`writer.generate_project`), holds the bit-exact numpy twin (`reference.HlsReference`) and runs C
simulation with g++ (`csim.run_csim`). `ip` is the VLNV and register map the PYNQ driver shares.
"""
