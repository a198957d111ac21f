"""mlkd: multi-label classification with (self-)knowledge distillation.

Three lines for a practitioner::

    from mlkd import SKDTEAClassifier
    clf = SKDTEAClassifier().fit(X, Y)
    clf.predict(X_new)
"""

__version__ = "0.1.0"

from .estimator import (  # noqa: E402
    C2AEClassifier,
    DistillClassifier,
    KDTEAClassifier,
    MPVAEClassifier,
    MultiLabelClassifier,
    SKDTEAClassifier,
)
from .io import load_model, save_model  # noqa: E402

__all__ = [
    "MultiLabelClassifier", "SKDTEAClassifier", "C2AEClassifier", "MPVAEClassifier", "KDTEAClassifier",
    "DistillClassifier", "load_model", "save_model", "__version__",
]
