"""The robustness benchmark (``isfl benchmark robustness``): options, the run, the report and the plots.

* :mod:`~napari_isfl.evaluation.robustness.options`: what a run does, and its command-line options;
* :mod:`~napari_isfl.evaluation.robustness.run`: preparing cases, fusing under perturbations, scoring;
* :mod:`~napari_isfl.evaluation.robustness.report`: summaries, the markdown report, CSV/JSON outputs;
* :mod:`~napari_isfl.evaluation.robustness.plots`: plots and montages (matplotlib).

How each fusion is perturbed and scored: :mod:`~napari_isfl.evaluation.robustness.run`.
"""
