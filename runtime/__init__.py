"""Plumbing under every stage: safe writes, user errors, worker processes, torchrun, memory and RNG state.

It imports nothing from data_factory, model or evaluation: they build on it.
"""
