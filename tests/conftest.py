import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def quiet_libraries():
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


@pytest.fixture(scope="module")
def one_thread():
    """Small solver workloads run faster on one thread than on two contended ones (opt in per module)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory):
    """Folders of tiny random pipelines, saved once per session: pipeline_dir('sd') -> path."""
    from inversa.tiny.random_pipelines import save_pipeline

    cache = {}

    def get(family: str) -> str:
        if family not in cache:
            cache[family] = save_pipeline(family, str(tmp_path_factory.mktemp("pipes") / family))
        return cache[family]

    return get


@pytest.fixture(scope="session")
def tiny_model(pipeline_dir):
    from inversa import load_model

    cache = {}

    def get(family: str, dtype: str = "float32"):
        if (family, dtype) not in cache:
            cache[family, dtype] = load_model(pipeline_dir(family), dtype=dtype)
        return cache[family, dtype]

    return get


@pytest.fixture
def photo(tmp_path):
    """A real photo from scikit-image, saved as PNG at 64x64."""
    from PIL import Image
    from skimage import data

    path = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((64, 64)).save(path)
    return str(path)


@pytest.fixture
def cli_round_trip(photo, tmp_path):
    """``inversa invert`` (fixed_point, 2 steps) then ``inversa reconstruct`` on a model folder, at ``size``."""
    def run(model_dir: str, size: int) -> None:
        from PIL import Image

        from inversa.cli.main import main

        out = tmp_path / "inv"
        assert main(["invert", photo, "--model", model_dir, "--method", "fixed_point", "--steps", "2",
                     "--size", str(size), "-o", str(out)]) == 0
        assert main(["reconstruct", str(out / "inversion.safetensors"), "--model", model_dir,
                     "-o", str(tmp_path / "rec.png")]) == 0
        assert Image.open(tmp_path / "rec.png").size == (size, size)

    return run


@pytest.fixture(scope="session")
def bench_script():
    """Import a script under benchmarks/ by name (they are scripts, not a package)."""
    import importlib.util
    import pathlib
    import sys

    def load(name: str):
        path = pathlib.Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while being built
        spec.loader.exec_module(module)
        return module

    return load
