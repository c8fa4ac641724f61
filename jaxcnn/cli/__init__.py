"""The ``jaxcnn`` command: ``main`` parses and dispatches, one module per command group.

``main``: train, eval, models, predict; ``dream``: visualize, dream, invert, style; ``attack``:
attack, fool, patch; ``explain``: explain; ``loading``: the model, weights, checkpoint, image
and data-set loading they share; ``compile_cache``: JAX's persistent compilation cache.
"""

from jaxcnn.cli.main import main, run

__all__ = ["main", "run"]
