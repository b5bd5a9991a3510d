r"""The experiment layer behind the ``zuko-lu`` command: datasets, preprocessing,
training, checkpoints, model building by name, runs, comparisons and pictures.

The library (:mod:`zuko_lu` and its faces) never imports this subpackage; it imports
the library, and the optional ``data`` extra (matplotlib, scikit-learn, mlxtend, tqdm).
"""

__all__: list[str] = []
