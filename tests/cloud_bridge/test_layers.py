"""LayerStack: the kernels-backed partial forward, held to the numpy reference and to itself when split."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.model import load
from edgekit.model.reference import KVCache, ReferenceForward

from edgekit.cloud_bridge.layers import LayerStack, full_forward

from tests.cloud_bridge.conftest import DEFAULT_MODEL


def _models(models):
    return [load(DEFAULT_MODEL), load(models / "stories260K.bin")]


def test_full_range_matches_reference(models):
    for model in _models(models):
        tokens = model.tokenizer.encode("Once upon a time there was a cat", add_bos=True)
        ref = ReferenceForward(model).forward(tokens, KVCache(model.config))
        got = full_forward(LayerStack(model), tokens)
        # same weights, kernels instead of numpy matmuls: float rounding only
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_split_ranges_equal_the_full_range_bit_for_bit():
    model = load(DEFAULT_MODEL)
    stack = LayerStack(model)
    tokens = model.tokenizer.encode("The dog ran to the park and", add_bos=True)
    positions = np.arange(len(tokens))
    whole = stack.final_logits(stack.run_layers(stack.embed(tokens), 0, 4, positions, stack.new_cache()))
    edge_cache, cloud_cache = stack.new_cache(), stack.new_cache()
    h = stack.run_layers(stack.embed(tokens), 0, 2, positions, edge_cache)
    split = stack.final_logits(stack.run_layers(h, 2, 4, positions, cloud_cache))
    assert np.array_equal(whole, split)
    assert not cloud_cache.k[:2].any() and not edge_cache.k[2:].any()   # each side fills only its layers


def test_prefill_then_decode_equals_one_prefill():
    model = load(DEFAULT_MODEL)
    stack = LayerStack(model)
    tokens = model.tokenizer.encode("A bird sang a song", add_bos=True)
    cache = stack.new_cache()
    full_forward(stack, tokens[:-2], cache)
    full_forward(stack, tokens[-2:-1], cache)
    last = full_forward(stack, tokens[-1:], cache)[-1]
    one = full_forward(stack, tokens)[-1]
    assert np.abs(last - one).max() <= 1e-5 * np.abs(one).max()


def test_state_copy_of_the_true_input_writes_the_true_kv():
    model = load(DEFAULT_MODEL)
    stack = LayerStack(model)
    tokens = model.tokenizer.encode("Tom had a red ball", add_bos=True)
    positions = np.arange(len(tokens))
    true_cache, copy_cache = stack.new_cache(), stack.new_cache()
    h1 = stack.run_layers(stack.embed(tokens), 0, 1, positions, true_cache)
    stack.run_layers(h1, 1, 2, positions, true_cache)
    stack.fill_kv_copy(h1, 1, 2, positions, copy_cache)     # layer 1's input is exactly h1
    assert np.array_equal(copy_cache.k[1, :len(tokens)], true_cache.k[1, :len(tokens)])
    assert np.array_equal(copy_cache.v[1, :len(tokens)], true_cache.v[1, :len(tokens)])


def test_bad_layer_range_and_tokens_are_typed_errors():
    from edgekit.errors import ConfigError, GenerationError

    stack = LayerStack(load(DEFAULT_MODEL))
    h = stack.embed([1, 2])
    with pytest.raises(ConfigError, match="layer range"):
        stack.run_layers(h, 3, 9, np.arange(2), stack.new_cache())
    with pytest.raises(GenerationError, match="outside the vocabulary"):
        stack.embed([10 ** 6])
    with pytest.raises(GenerationError, match="exceeds the context"):
        stack.run_layers(h, 0, 1, np.arange(10, 12), stack.new_cache(8))
