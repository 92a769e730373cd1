"""The prose of the demo's page (kept out of ``app.py``, which holds the layout)."""

#: The page's title and introduction.
INTRO = (
    "# cut-hf demo\nContrastive unpaired image-to-image translation — CUT / FastCUT "
    "([Park et al., 2020](https://arxiv.org/abs/2007.15651)) and the SimCLR ideas it grows from "
    "([Chen et al., 2020](https://arxiv.org/abs/2002.05709)). The default model is a small CUT "
    "generator shipped with the repository, trained on a synthetic *mini horse → zebra* dataset "
    "at 64 px: it adds stripes to horses like the examples, not to photographs."
)

#: The Augmentation explorer's introduction.
AUGMENT = (
    "SimCLR's augmentation family *T(·)*: every view is a random resized crop, then a flip, colour "
    "jitter, grayscale and blur, each taken with its probability. Two views of one image are a "
    "**positive pair**; views of other images are **negatives**."
)

#: The NT-Xent batch section's heading and introduction.
BATCH = (
    "### A batch through NT-Xent\nThe example images above, two views each (same controls and seed): "
    "the 2N × 2N cosine-similarity matrix of their embeddings, and SimCLR's NT-Xent loss. Rows and "
    "columns: view 1 of every image (orange), then view 2 (cyan)."
)

#: The PatchNCE explorer's instructions; the captions are explained here, as they are short.
PATCHNCE = (
    "**Click a point on the input.** For each NCE layer of the generator's encoder, the heatmap shows "
    "the cosine similarity between the input's embedding at that point (the query) and the "
    "translation's embedding at every location — through the trained PatchSampler MLP when the model "
    "has one. PatchNCE trains the same place to win (green cross: the query; yellow ring: the most "
    "similar location; captions: the peak similarity and its distance from the query in map cells)."
)

#: The Video tab's line: its limits (filled in by the app) and what the statistics choice means.
VIDEO = (
    "Videos up to {seconds:g} s and {pixels:,} pixels per frame; one video job runs at a time. *clip* takes the "
    "norm statistics of the whole clip (steady colours), *frame* those of each frame, as the paper (colours "
    "pulse as things move)."
)
