"""LSTM ports checked by the conformance suite, starting with the NumPy reference port."""
