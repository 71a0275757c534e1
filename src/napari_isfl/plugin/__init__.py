"""The napari plugin: a thin layer over the core (see ``napari.yaml`` for its contributions).

* :mod:`~napari_isfl.plugin.layers`: :func:`fuse_layers` (console and scripts) and the three steps the
  widget runs (snapshot layers, fuse off the GUI thread, add or update output layers);
* :mod:`~napari_isfl.plugin.widget` and :mod:`~napari_isfl.plugin.session`: the "Fuse modalities"
  widget and its worker-thread session;
* :mod:`~napari_isfl.plugin.reader`, :mod:`~napari_isfl.plugin.writer`,
  :mod:`~napari_isfl.plugin.sample_data`: NIfTI in and out, the bundled samples.

napari itself is imported inside functions (or by the widget module, which napari loads only when the
widget is opened), so importing this package needs no napari.
"""
