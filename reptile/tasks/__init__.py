"""Task families: sine waves, least squares (few-shot image episodes live in ``reptile.data``)."""
from .least_squares import AffineSubspace, LeastSquaresTask, LeastSquaresTaskDistribution
from .schedules import SCHEDULES, gather, minibatch_indices
from .sine import SineTask, SineTaskDistribution

__all__ = ["AffineSubspace", "LeastSquaresTask", "LeastSquaresTaskDistribution", "SCHEDULES", "gather",
           "minibatch_indices", "SineTask", "SineTaskDistribution"]
