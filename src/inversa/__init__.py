"""inversa: precise diffusion inversion for diffusers models."""
from inversa.core.errors import InversaError
from inversa.core.replay import denoise
from inversa.core.types import Condition, Embeds, Schedule
from inversa.inversion.api import invert, reconstruct
from inversa.inversion.stock import stock_callback, stock_scheduler
from inversa.io.result import Inversion
from inversa.methods import available as available_methods
from inversa.models.diffusers.base import DiffusersModel
from inversa.models.diffusers.loader import load_model
from inversa.models.model import Model

__all__ = ["invert", "reconstruct", "denoise", "load_model", "Inversion", "Model", "Condition", "Embeds",
           "Schedule", "DiffusersModel", "InversaError", "available_methods",
           "stock_callback", "stock_scheduler"]
__version__ = "0.1.0"
