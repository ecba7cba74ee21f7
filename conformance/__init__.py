"""lstm-conformance: where does an LSTM port differ from torch.nn.LSTM?

The names a port author needs are importable from here; see README.md for how to run the suite.
"""

from .adapters import FEATURES, Adapter, Capabilities
from .arrays import LSTMConfig, PackedArrays, packed_to_padded, padded_to_packed
from .dtypes import numpy_dtype

__all__ = ["Adapter", "Capabilities", "FEATURES", "LSTMConfig", "PackedArrays", "numpy_dtype", "packed_to_padded",
           "padded_to_packed"]
__version__ = "0.1.0"
