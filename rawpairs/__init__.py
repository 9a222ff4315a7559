"""rawpairs: RAW–RGB pair datasets for training vision models that read camera RAW."""

from rawpairs.camera import Camera
from rawpairs.cfa import CFA

__version__ = "0.1.0"
__all__ = ["CFA", "Camera", "__version__"]
