"""Type stubs of medfm's extension module (crates/python/src); medfm re-exports it."""

from os import PathLike
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

# Any sequence of numbers (a tuple, a list, a numpy array): a box (x0, y0, x1, y1), a point
# (x, y) or (x, y, label), a window (center, width), a colour (r, g, b).
Numbers = Union[Sequence[float], npt.NDArray[np.number]]
Box = Numbers
Point = Numbers
Path = Union[str, PathLike[str]]

class Series:
    """A DICOM series: its instances and its slices in series order (the order of the
    CLI, the node and the SEG files). Made by `read_series`."""

    @property
    def volume(self) -> npt.NDArray[np.float32]:
        """Decoded pixels (modality LUT applied: HU for CT), (frames, rows, cols), or
        (frames, rows, cols, 3) for colour, in series order; read-only."""
    @property
    def spacing(self) -> Optional[Tuple[float, float, float]]:
        """Voxel spacing (slice, row, col) in mm, in the array's axis order; None
        without geometry."""
    @property
    def uids(self) -> list[str]:
        """SOPInstanceUID of each slice, in series order."""
    @property
    def frames(self) -> list[Tuple[str, int]]:
        """(SOPInstanceUID, frame number in that instance) of each slice."""
    @property
    def paths(self) -> list[Optional[str]]:
        """The file each slice was read from."""
    @property
    def meta(self) -> dict[str, Union[str, int]]:
        """study_uid, series_uid, modality, description, rows, cols,
        samples_per_pixel, transfer_syntax."""
    @property
    def warnings(self) -> list[str]:
        """What reading and ordering assumed or passed over."""
    def __len__(self) -> int: ...

class Propagation:
    """A prompt carried through a series by `Model.propagate`."""

    @property
    def masks(self) -> npt.NDArray[np.uint8]:
        """0/1 (frames, rows, cols) over the whole series, zero where it did not reach."""
    @property
    def start(self) -> int:
        """The slice the prompt was on."""
    @property
    def slices(self) -> list[int]:
        """The slices it segmented, in series order."""
    @property
    def iou(self) -> list[float]:
        """The predicted IoU of each of `slices`."""
    @property
    def stopped(self) -> Tuple[str, str]:
        """Why it stopped towards higher, then lower slice indices: series-end, extent,
        empty-mask, low-iou or cancelled."""
    @property
    def warnings(self) -> list[str]: ...

class Model:
    """LiteMedSAM on this machine's CPU or GPU. One run configuration (device, threads)
    per process; calls from several threads run one at a time, the GIL released."""

    def __init__(
        self,
        precision: str = "fp32",
        device: str = "auto",
        weights: Optional[Path] = None,
        threads: Optional[int] = None,
        allow_unpinned: bool = False,
    ) -> None: ...
    @property
    def precision(self) -> Optional[str]:
        """fp32, int8 or int4 (the pinned file loaded); None for an unpinned file."""
    @property
    def device(self) -> str: ...
    @property
    def weights_sha256(self) -> str: ...
    @property
    def weights(self) -> str: ...
    def segment(
        self,
        image: Union[Series, npt.NDArray[np.generic]],
        frame: int = 0,
        box: Optional[Box] = None,
        points: Optional[Sequence[Point]] = None,
        window: Optional[Numbers] = None,
        modality: Optional[str] = None,
        multimask: bool = False,
    ) -> npt.NDArray[np.uint8]:
        """The 0/1 mask (rows, cols) of slice `frame` of a Series, or of a numpy image
        (rows, cols) uint8/int16/uint16/float32 or (rows, cols, 3) uint8 RGB, for a box
        (x0, y0, x1, y1) and/or points; equal to `medfm segment`'s."""
    def propagate(
        self,
        series: Series,
        frame: int,
        box: Optional[Box] = None,
        points: Optional[Sequence[Point]] = None,
        extent: Optional[int] = None,
        min_iou: float = 0.5,
    ) -> Propagation:
        """The prompt on slice `frame` carried through the series, as `medfm segment
        --propagate`."""
    def embed(self, series: Series) -> npt.NDArray[np.float32]:
        """One unit-norm vector per slice (frames, 256), as `medfm embed`."""
    def segment_rules(
        self, series: Series, rules: Rules, path: Path
    ) -> Optional[Tuple[str, list[dict[str, Any]]]]:
        """The SEG of the first matching rule with a segment job, written atomically to
        `path`: (the rule's name, one summary per segment); None, nothing written, when no
        rule matches."""

class Rules:
    """The node's `[[rule]]` tables, read by `read_rules`."""
    @property
    def names(self) -> list[str]: ...
    def __len__(self) -> int: ...

def read_rules(path: Path) -> Rules:
    """A rules file: `[[rule]]` tables as in node.toml, each checked as the node does."""

def write_atomic(path: Path, data: bytes) -> None:
    """`data` to `path`, whole or not at all (a temporary file renamed into place)."""

def pinned_sha256(precision: str) -> str:
    """The sha256 of the pinned weights of `fp32`, `int8` or `int4`."""

def read_series(
    path: Path,
    series_uid: Optional[str] = None,
    *,
    token: Optional[str] = None,
    user: Optional[str] = None,
) -> Series:
    """The series in a DICOM file, a folder (searched recursively) or at a DICOMweb
    URL (retrieved by WADO-RS; a bearer ``token`` or basic ``user`` "USER:PASSWORD",
    else $MEDFM_DICOMWEB_TOKEN / $MEDFM_DICOMWEB_USER)."""

def write_seg(
    series: Series,
    masks: Union[Propagation, npt.NDArray[np.uint8], npt.NDArray[np.bool_]],
    path: Path,
    labels: Optional[Sequence[str]] = None,
    colors: Optional[Sequence[Numbers]] = None,
) -> None:
    """A binary DICOM SEG of the masks over the series, written atomically."""
