"""medfm: LiteMedSAM segmentation and embeddings of DICOM series, on this machine.

    import medfm
    model = medfm.Model(precision="int8", device="cpu")
    series = medfm.read_series("path/to/series_folder")
    mask = model.segment(series, frame=0, box=(x0, y0, x1, y1))   # np.uint8 (rows, cols)
    result = model.propagate(series, frame=k, box=(x0, y0, x1, y1))
    medfm.write_seg(series, result, "seg.dcm", labels=["Tumour"])
    vectors = model.embed(series)                                  # np.float32 (frames, 256)

The same library as the ``medfm`` command line underneath: a mask, a propagation or a
vector here is the one the CLI gives for the same file, prompt and weights.
"""

from medfm._medfm import (
    Model,
    Propagation,
    Rules,
    Series,
    __version__,
    pinned_sha256,
    read_rules,
    read_series,
    write_seg,
)
from medfm.index import Index, search
from medfm.errors import (
    BadInput,
    DeviceError,
    Error,
    InternalError,
    IoError,
    Unsupported,
    WeightsError,
)

__all__ = [
    "BadInput",
    "DeviceError",
    "Error",
    "Index",
    "InternalError",
    "IoError",
    "Model",
    "Propagation",
    "Rules",
    "Series",
    "Unsupported",
    "WeightsError",
    "__version__",
    "pinned_sha256",
    "read_rules",
    "read_series",
    "search",
    "write_seg",
]
