"""medfm's exceptions: one class per kind of the library's errors (the rule behind the
CLI's exit codes and the JS API's ``code``), raised by every call of the package.

``Error`` is the base of them all; ``kind`` is the library's name of the kind. A fault of
medfm itself (a Rust panic included) is ``InternalError``: it never takes the process down.
"""


class Error(Exception):
    """Any error of medfm. ``kind``: ``bad-input``, ``unsupported``, ``weights``,
    ``device``, ``io`` or ``internal``."""

    kind = "internal"


class BadInput(Error, ValueError):
    """The input is wrong: not DICOM, pixel data that does not decode, a wrong dtype or
    shape, a bad prompt or option. Also a ``ValueError``."""

    kind = "bad-input"


class Unsupported(BadInput):
    """The input may be right, but uses what medfm does not handle: pixel data in an
    encoding without a decoder here (a video transfer syntax, 12-bit colour JPEG).
    Converting the file first helps. A ``BadInput`` (and a ``ValueError``) too, so code
    that catches those catches this."""

    kind = "unsupported"


class WeightsError(Error):
    """The weights are missing, not the pinned files, or unreadable
    (``medfm weights fetch`` gets them)."""

    kind = "weights"


class DeviceError(Error):
    """The device failed, or another run configuration (device, threads) is already in
    use in this process."""

    kind = "device"


class IoError(Error, OSError):
    """Reading or writing a file failed. Also an ``OSError``."""

    kind = "io"


class InternalError(Error):
    """A fault of medfm itself (a caught panic included): please report it."""

    kind = "internal"


# The library's kind -> its class (the extension module raises through this table).
BY_KIND = {
    cls.kind: cls
    for cls in (BadInput, Unsupported, WeightsError, DeviceError, IoError, InternalError)
}
