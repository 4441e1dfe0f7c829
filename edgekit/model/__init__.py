"""Models: configs, checkpoint loaders, tokenizers and the numpy reference forward.

    from edgekit.model import load
    model = load("stories260K.bin")      # or an HF directory, or a .gguf file
"""

from edgekit.model.config import ModelConfig, RopeConfig
from edgekit.model.loaders import FORMATS, detect_format, load
from edgekit.model.model import Model
from edgekit.model.tokenizer import Tokenizer

__all__ = ["FORMATS", "Model", "ModelConfig", "RopeConfig", "Tokenizer", "detect_format", "load"]
