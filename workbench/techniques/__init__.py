"""Post-training techniques on Keras functional models: pure, each returns a new model and a report."""

from workbench.techniques.batch_norm_fold import fold_batch_norms
from workbench.techniques.cross_layer_equalization import cross_layer_scale, equalize_model

__all__ = ["fold_batch_norms", "equalize_model", "cross_layer_scale"]
