"""The public API's documentation against the code: documented defaults, parameters and fitted attributes."""

import inspect
import re

import numpy as np
import pytest

import mlkd
from mlkd import MultiLabelClassifier, load_model
from mlkd.io import load_model as io_load_model
from mlkd.methods import config_fields

from .helpers import linear_problem

BOUND_CLASSES = {"SKDTEAClassifier": "skdtea", "C2AEClassifier": "c2ae", "MPVAEClassifier": "mpvae",
                 "KDTEAClassifier": "kdtea", "DistillClassifier": "distill"}


def _section(doc: str, title: str) -> str:
    """The text of a numpydoc section (``title`` and its dashes up to the next section or the end)."""
    match = re.search(rf"^\s*{title}\n\s*-+\n(.*?)(?=^\s*\w[\w ]*\n\s*-+\n|\Z)", doc, re.M | re.S)
    assert match, f"no {title} section"
    return match.group(1)


def test_every_estimator_parameter_is_documented_with_its_true_default():
    signature = inspect.signature(MultiLabelClassifier).parameters
    params = _section(MultiLabelClassifier.__doc__, "Parameters")
    documented = {}
    for names, default in re.findall(r"^    (\*{0,2}\w+(?:, \w+)*(?:,\n    \w+(?:, \w+)*)*) :[^\n]*?(?:default=(.+))?$",
                                     params, re.M):
        for name in re.split(r",\s*", names.strip()):
            documented[name.lstrip("*")] = default
    assert set(documented) == set(signature), "documented parameters differ from MultiLabelClassifier's"
    for name, default in documented.items():
        if default:
            assert eval(default, {"__builtins__": {}}) == signature[name].default, name  # noqa: S307


@pytest.mark.parametrize("name", sorted(BOUND_CLASSES))
def test_bound_classes_take_their_methods_parameters_at_their_defaults(name):
    """help(SKDTEAClassifier) shows its signature: every training setting as MultiLabelClassifier's, every method
    parameter at config_fields' default, and the docstring names them all."""
    cls, method = getattr(mlkd, name), BOUND_CLASSES[name]
    base = {k: p.default for k, p in inspect.signature(MultiLabelClassifier).parameters.items()
            if k != "method" and p.kind is p.KEYWORD_ONLY}
    own = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
    assert own == {**base, **config_fields(method)}
    assert all(re.search(rf"\b{k}\b", cls.__doc__) for k in config_fields(method))
    assert cls().get_params() == own


def test_every_fitted_attribute_is_documented(tmp_path):
    pd = pytest.importorskip("pandas")
    X, Y = linear_problem(n=60, d=4, L=3)
    X = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])  # feature_names_in_ too
    clf = MultiLabelClassifier("bce", hidden=8, max_epochs=2).fit(X, Y)
    fitted = {k for k in vars(clf) if k.endswith("_") and not k.startswith("_")}
    attributes = _section(MultiLabelClassifier.__doc__, "Attributes")
    assert {"classes_", "feature_names_in_", "threshold_", "stage_results_"} <= fitted
    assert not [k for k in sorted(fitted) if not re.search(rf"\b{k}(?!\w)", attributes)]
    loaded = load_model(clf.save(tmp_path / "m"))
    restored = {k for k in vars(loaded) if k.endswith("_") and not k.startswith("_")}
    doc = io_load_model.__doc__
    assert not [k for k in sorted(restored) if not re.search(rf"``{k}``", doc)]
    # what load_model says is not restored is indeed absent
    assert not [k for k in ("stage_results_", "stage_models_", "resumed_seconds_") if k in restored]
    assert np.array_equal(loaded.predict(X), clf.predict(X))
