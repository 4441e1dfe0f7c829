"""CE-CoLLM cloud-edge collaboration (arXiv 2411.02829): the edge answers confident tokens with early exits,
the cloud the hard ones, both running the same packed model on edgekit's kernels. See docs/BRIDGE.md.

    layers.py    LayerStack: any layer range on given hidden states with its own KV cache (kernels)
    exits.py     SplitPlan, ExitHead, heads stored with the packed model
    train.py     exit heads distilled from the full model's logits, backbone frozen (torch)
    edge.py      EdgeRunner: exit rule, deferred / state-copy KV for layers above an exit
    cloud.py     CloudContext: lazy KV extension; batch_answers across sessions
    protocol.py  msgpack frames over WebSocket (versioned), f32/f16/int8 boundary states
    server.py, routes.py, serving.py, metrics.py   the FastAPI/uvicorn cloud server
    client.py, session.py   the edge's link (async uploads), standalone mode, resync, adaptive threshold
    backend.py   `--backend bridge`;  netem.py  latency/fault proxy;  bench.py  `edgekit bridge bench`

The edge path (layers, exits, edge, protocol, client, session) imports no torch.
"""
