"""The cloud context: lazy extension and batching of hard requests across sessions."""

from __future__ import annotations

import numpy as np

from edgekit.cloud_bridge.cloud import CloudContext, ContextMismatch, batch_answers
from edgekit.cloud_bridge.layers import LayerStack, full_forward
from edgekit.model import load

from tests.cloud_bridge.conftest import DEFAULT_MODEL


def _contexts(stack, prompts):
    """One context per prompt with every boundary state received (split 2), nothing processed yet."""
    contexts = []
    for prompt in prompts:
        h = stack.run_layers(stack.embed(prompt), 0, 2, np.arange(len(prompt)), stack.new_cache())
        context = CloudContext(stack, 2, 64)
        context.append(0, h)
        contexts.append(context)
    return contexts


def test_batched_requests_equal_one_at_a_time_bit_for_bit():
    model = load(DEFAULT_MODEL)          # packed, int8 activations: every row is computed exactly
    stack = LayerStack(model)
    prompts = [model.tokenizer.encode(t, add_bos=True) for t in ("Once upon a time", "The cat sat", "A dog")]
    together = batch_answers(stack, [(c, len(p) - 1, 8) for c, p in zip(_contexts(stack, prompts), prompts)])
    alone = [batch_answers(stack, [(c, len(p) - 1, 8)])[0] for c, p in zip(_contexts(stack, prompts), prompts)]
    assert [(a.token, a.top_ids, a.top_logits) for a in together] == [(a.token, a.top_ids, a.top_logits)
                                                                      for a in alone]
    for answer, prompt in zip(together, prompts):
        assert answer.token == int(full_forward(stack, prompt)[-1].argmax())


def test_lazy_extension_runs_only_new_rows_and_mismatches_answer_alone():
    model = load(DEFAULT_MODEL)
    stack = LayerStack(model)
    prompt = model.tokenizer.encode("Once upon a time there was", add_bos=True)
    context, other = _contexts(stack, [prompt, prompt])
    first = batch_answers(stack, [(context, 2, 0)])[0]             # runs positions 0..2 only
    assert context.processed == 3 and first.token == int(full_forward(stack, prompt[:3])[-1].argmax())
    results = batch_answers(stack, [(context, len(prompt) - 1, 0), (other, len(prompt) + 4, 0)])
    assert results[0].token == int(full_forward(stack, prompt)[-1].argmax())
    assert isinstance(results[1], ContextMismatch) and results[1].have == len(prompt)
