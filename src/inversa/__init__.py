"""inversa: precise diffusion inversion for diffusers models."""
from .api import denoise, invert, reconstruct
from .errors import InversaError
from .methods import available as available_methods
from .families import DiffusersModel, load_model
from .model import Condition, Embeds, Model, Schedule
from .result import Inversion
from .stock import stock_callback, stock_scheduler

__all__ = ["invert", "reconstruct", "denoise", "load_model", "Inversion", "Model", "Condition", "Embeds",
           "Schedule", "DiffusersModel", "InversaError", "available_methods",
           "stock_callback", "stock_scheduler"]
__version__ = "0.1.0"
