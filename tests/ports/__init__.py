"""Torch-module LSTM ports used to test the conformance suite itself.

``scratch_lstm`` holds correct drop-in replacements for ``torch.nn.LSTM`` written from torch ops;
``broken`` holds a catalogue of subclasses, each with exactly one realistic porting bug.
"""
