"""The CNNs of the `barrier` and `organelles` stages: an anisotropic 3D U-Net, its model files,
tiled blended inference, training and the segmentation metrics they are judged by."""

TASK_CHANNELS = {"barrier": ("barrier",), "organelles": ("sj", "vc", "mi")}  # output channels per task, in layer order
