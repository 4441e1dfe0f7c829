"""HLS C++ for TeLLMe-style ternary accelerators (edgekit.hls). Not built yet: see ARCHITECTURE.md."""
