"""The logic behind ``app.py``, the Gradio demo, kept apart from the page layout so it can be tested alone.

- :mod:`.handlers`: the page's event handlers, with the named parameters of the app's API.
- :mod:`.catalog`: the models a session offers (an allowlist) and the names it shows for them.
- :mod:`.uploads`: any upload -> an RGB image, or a readable refusal (:class:`.errors.DemoError`).
- :mod:`.models`: generators (and their PatchSamplers) by Hub id or folder, cached, loaded with a time limit.
- :mod:`.translation`: the Translate tab (resolution, precision, tiled path for large images).
- :mod:`.augment_explorer`: SimCLR's T(.) on one image; NT-Xent over a small batch of views.
- :mod:`.patch_explorer`: PatchNCE's picture: where an input patch lands in the translation.
- :mod:`.render`: colour maps, overlays and markers (PIL only).
- :mod:`.examples`, :mod:`.texts`: the example pictures and the page's prose.

Nothing here imports gradio.
"""
