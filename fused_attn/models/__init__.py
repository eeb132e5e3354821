"""Models built from the drop-in attention modules: VGG16 variants and `insert_attention`."""
from .vgg import (
                  VGG,
                  VGG16_CFG,
                  VGG16_POOL_POSITIONS,
                  insert_attention,
                  vgg16,
                  vgg16_features,
                  vgg16_msa,
                  vgg16_sca,
                  vgg16_se,
)

__all__ = ["VGG", "vgg16_features", "insert_attention", "vgg16", "vgg16_se", "vgg16_msa", "vgg16_sca",
           "VGG16_CFG", "VGG16_POOL_POSITIONS"]
