"""edgekit: ternary and low-bit LLM inference for CPUs, phones, FPGAs and hybrid cloud-edge serving."""

__version__ = "0.1.0"
