"""Where the native engine's decode time goes, per token: wall time, time inside the kernel calls (by shape and
format) and the rest (norms, RoPE, attention, Python). Not a test: indicative numbers on a shared machine.

Reads the bench's cached synthetic model (build it first with `edgekit bench`, which caches it under
~/.cache/edgekit/bench), e.g.

    EDGEKIT_NUM_THREADS=2 python scripts/decode_profile.py --weights t2 --threads 2 --steps 32
    EDGEKIT_NUM_THREADS=2 python scripts/decode_profile.py --weights t2 --prompt-length 128 --steps 128 --breakdown

--prompt-length N decodes after an N-token prompt (the bench's tg128 runs after pp128, so attention reads
128-256 cached positions); --breakdown also times the engine's non-kernel steps (norms, RoPE, attention, gating,
KV store) by wrapping them, which adds ~1 us of Python per wrapped call to the rest.
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np

from edgekit.bench.config import SHAPES, WEIGHT_FORMATS, default_work_dir
from edgekit.bench.sessions import open_session
from edgekit.errors import ConfigError
from edgekit.kernels import api
from edgekit.runtime import native
from edgekit.runtime.kv_cache import KV_CACHES

STEPS = ("rms_norm", "apply_rope", "relu2_gate", "silu_gate", "bitlinear_norm")      # native.py's imported ops
METHODS = ("attend", "embed")                                                        # NativeBackend methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="bitnet-2b4t", choices=sorted(SHAPES))
    parser.add_argument("--weights", default="t2", choices=sorted(WEIGHT_FORMATS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--prompt-length", type=int, default=1)
    parser.add_argument("--breakdown", action="store_true", help="time the non-kernel steps too")
    parser.add_argument("--work-dir", default=str(default_work_dir()))
    args = parser.parse_args()
    found = sorted(Path(args.work_dir).glob(f"{args.shape}-{args.weights}-*.edgekit"))
    if not found:
        raise ConfigError(f"no cached {args.shape} {args.weights} model in {args.work_dir}",
                          fix=f"run `edgekit bench --preset full --shape {args.shape} --format {args.weights}` once")
    spec = {"kind": "cell", "backend": "native", "weights": args.weights, "threads": args.threads,
            "model_path": str(found[0]), "gguf_path": None, "onnx_path": None,
            "vocab_size": SHAPES[args.shape].vocab_size, "context_length": args.prompt_length + args.steps + 8, "kv_type": "f16",
            "prompt_lengths": [1], "generate_length": args.steps, "repetitions": 1, "seed": 0}
    session = open_session(spec)
    session.reset()
    session.decode(1)                                    # first call allocates buffers

    prompt = [1 + i % 97 for i in range(args.prompt_length)]

    def run() -> float:
        session.reset()
        token = int(np.argmax(session.prefill(prompt))) if args.prompt_length > 1 else 1
        spent.clear()
        calls.clear()                                    # the prompt's calls are not decode time
        start = time.perf_counter()
        for _ in range(args.steps):
            token = int(np.argmax(session.decode(token)))
        return (time.perf_counter() - start) / args.steps

    spent, calls = collections.defaultdict(float), collections.Counter()
    wall = min(run() for _ in range(2))
    print(f"{args.shape} {args.weights} {args.threads} thread(s), prompt {args.prompt_length}: {1 / wall:.2f} tok/s, "
          f"{wall * 1e3:.2f} ms/token")
    original = api.PreparedLinear.__call__

    def timed(self, x, out=None):
        start = time.perf_counter()
        result = original(self, x, out)
        key = (self.rows, self.cols, self.tensor.format)
        spent[key] += time.perf_counter() - start
        calls[key] += 1
        return result

    group_call = getattr(api, "LinearGroup", None) and api.LinearGroup.__call__

    def timed_group(self, x, out=None):                  # several weights in one call (gate/up): "ek_t2 x2"
        start = time.perf_counter()
        result = group_call(self, x, out)
        key = (self.rows, self.cols, f"{self.parts[0].tensor.format} x{len(self.parts)}")
        spent[key] += time.perf_counter() - start
        calls[key] += 1
        return result

    api.PreparedLinear.__call__ = timed
    if group_call:
        api.LinearGroup.__call__ = timed_group
    restore = wrap_steps(spent, calls) if args.breakdown else []
    try:
        total = run()
    finally:
        api.PreparedLinear.__call__ = original
        if group_call:
            api.LinearGroup.__call__ = group_call
        for owner, name, function in restore:
            setattr(owner, name, function)
    steps = {k: spent.pop(k) for k in list(spent) if isinstance(k, str)}
    in_kernels = sum(spent.values()) / args.steps
    print(f"timed run {total * 1e3:.2f} ms/token: kernel calls {in_kernels * 1e3:.2f} ms, "
          f"rest {(total - in_kernels) * 1e3:.2f} ms")
    for key, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        rows, cols, fmt = key
        print(f"  {fmt:9} {rows:>6}x{cols:<5} {calls[key] // args.steps:3} calls/token "
              f"{seconds / args.steps * 1e3:7.2f} ms/token {seconds / calls[key] * 1e6:9.1f} us/call")
    for name, seconds in sorted(steps.items(), key=lambda kv: -kv[1]):      # timed outside the kernel calls
        print(f"  {name:18} {calls[name] // args.steps:3} calls/token {seconds / args.steps * 1e3:7.2f} ms/token "
              f"{seconds / calls[name] * 1e6:9.1f} us/call")


def wrap_steps(spent: dict, calls: collections.Counter) -> list:
    """Time the engine's element-wise steps and attention (spent[name] += seconds); returns what to restore."""
    restore = []

    def wrap(owner, name, label):
        function = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            spent[label] += time.perf_counter() - start
            calls[label] += 1
            return result
        restore.append((owner, name, function))
        setattr(owner, name, timed)

    for name in STEPS:
        if hasattr(native, name):
            wrap(native, name, name)
    for name in METHODS:
        wrap(native.NativeBackend, name, name)
    for name in ("store", "keys", "values"):
        for cls in KV_CACHES.values():
            if name in cls.__dict__:
                wrap(cls, name, f"kv.{name} ({cls.kind})")
    return restore


if __name__ == "__main__":
    main()
