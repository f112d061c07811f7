"""The CNNs of the `barrier`, `organelles` and `myelin_syntype` stages: an anisotropic 3D U-Net, its model files,
tiled blended inference, training and the segmentation metrics they are judged by."""

TASK_CHANNELS = {"barrier": ("barrier",), "organelles": ("sj", "vc", "mi"),
                 "myelin_syntype": ("myelin", "syntype")}  # output channels per task, in layer order
# tasks whose models may carry only some of their channels (each is a layer of its own; a missing one is skipped)
PARTIAL_TASKS = ("myelin_syntype",)
