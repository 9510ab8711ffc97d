"""``inversa serve``: a local web page to invert, inspect, edit and interpolate with one model.

The jobs (:func:`invert_job`, :func:`edit_job`, ...) are plain functions of the model and
the page's inputs, so they are tested without a browser; :func:`build` lays them out as a
Gradio page (the ``ui`` extra). One model per server, one job at a time with a queue;
an :class:`InversaError` reaches the page as its one line, never a traceback.
"""
from __future__ import annotations

import functools
import html
import inspect
import os
import tempfile
import typing

import numpy as np
import torch
from torch import Tensor

from inversa.core.errors import InversaError

PAGE_STEPS = 4  # the page's defaults: a job takes seconds on the embedded model
PAGE_METHOD = "preciseinv"  # the library default (benchmarks/hard_regime: ahead of the paper on every trained-model case)
MAX_UPLOAD_MB = 20
UPLOAD_MEGAPIXELS = 25.0  # decoded size cap: a small file can hold a huge image
DISPLAY = 192  # pixels: a 64 px model's images are shown enlarged, each pixel a square
SPACINGS = ("model's own", "leading", "trailing", "linspace")
EXTRA_HINT = "inversa serve needs the ui extra: pip install -e '.[ui]' (gradio, selenium)"


# method options as a table -------------------------------------------------------------------------------------------

def option_rows(method: str) -> list[list[str]]:
    """``[name, default, what it accepts]`` for each option of ``method`` (its signature, as validate checks it)."""
    from inversa.core.checks import lower_bound, option_kind
    from inversa.methods import get_method

    spec = get_method(method)
    params = inspect.signature(spec.invert, eval_str=True).parameters
    rows = []
    for name, default in spec.options().items():
        if name == "keep_trajectory":
            continue
        kind, optional = option_kind(params[name])
        if typing.get_origin(kind) is typing.Literal:
            accepts = "one of " + " | ".join(map(str, typing.get_args(kind)))
        elif kind is bool:
            accepts = "True | False"
        elif kind in (int, float):
            accepts = f"{'integer' if kind is int else 'number'} >= {lower_bound(kind, default)}"
        else:
            accepts = "text" if kind is str else "Python literal"
        rows.append([name, default if isinstance(default, str) else repr(default),
                     accepts + (" or None" if optional else "")])
    return rows


def options_from_rows(method: str, rows) -> dict:
    """The options a user set in the table (rows equal to the default are left out), checked like ``--opt``."""
    from inversa.cli.common import parse_options
    from inversa.editing.options import method_options

    defaults = {name: value for name, value, _ in option_rows(method)}
    pairs = [f"{row[0]}={row[1]}" for row in (rows or []) if row and str(row[1]).strip() != defaults.get(row[0])]
    return method_options(method, parse_options(pairs))


# inputs and pictures -------------------------------------------------------------------------------------------------

def read_upload(model, path: str | None, what: str = "the image") -> tuple[Tensor, list[str]]:
    """An uploaded image at the model's size, refusing files or pixel counts over the caps."""
    from PIL import Image

    from inversa.io.images import load_image
    from inversa.models.model import image_size

    if not path:
        raise InversaError(f"upload or pick {what} first")
    megabytes = os.path.getsize(path) / 2 ** 20
    if megabytes > MAX_UPLOAD_MB:
        raise InversaError(f"{what} is {megabytes:.0f} MB, over the {MAX_UPLOAD_MB} MB upload cap")
    try:
        with Image.open(path) as im:
            pixels = im.width * im.height / 1e6
    except Image.DecompressionBombError as exc:
        raise InversaError(f"{what}: {exc}") from None
    except Exception:  # noqa: BLE001 - not an image: load_image says so in one line
        pixels = 0.0
    if pixels > UPLOAD_MEGAPIXELS:
        raise InversaError(f"{what} has {pixels:.0f} megapixels, over the page's {UPLOAD_MEGAPIXELS:g}: resize it first")
    notes: list[str] = []
    return load_image(path, image_size(model, None), notes), notes


def picture(x: Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) in [-1, 1] -> HxWx3 uint8, enlarged (whole pixels) to a side of at least DISPLAY."""
    from inversa.io.images import to_uint8

    arr = to_uint8(x)
    zoom = max(1, -(-DISPLAY // max(arr.shape[:2])))
    return arr.repeat(zoom, axis=0).repeat(zoom, axis=1)


def error_map(image: Tensor, recon: Tensor) -> np.ndarray:
    """Per-pixel error |x - x_hat| (mean over RGB, on [0, 1]) as a heat map, full scale = 0.25."""
    from matplotlib import colormaps

    err = ((image - recon).abs().mean(dim=-3) / 2)[0].float().cpu().numpy()
    return picture(torch.from_numpy(colormaps["magma"](np.clip(err / 0.25, 0, 1))[..., :3]).permute(2, 0, 1) * 2 - 1)


def residual_figure(residuals: list[float] | None, method: str):
    """The per-step mean squared residual (index 0 = noisiest step), log scale."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3), dpi=80, layout="constrained")
    ax = fig.add_subplot()
    if residuals:
        ax.semilogy(range(len(residuals)), [max(r, 1e-30) for r in residuals], "o-")
    else:
        ax.text(0.5, 0.5, f"{method} records no per-step residual", ha="center", va="center")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="step (0 = noisiest)", ylabel="mean squared residual", title=f"{method}: per-step residual")
    return fig


# jobs ----------------------------------------------------------------------------------------------------------------

def _done(fraction: float, desc: str) -> None:
    """Progress callback that does nothing (outside the page)."""


def invert_job(model, image_path, prompt: str, method: str, steps: int, guidance: float, spacing: str,
               rows, outdir: str, progress=_done) -> dict:
    """Invert, reconstruct and score one image; the inversion is written to ``outdir``."""
    from inversa.bench.runner import step_residuals
    from inversa.core.metrics import summary
    from inversa.inversion.api import invert, reconstruct

    progress(0.0, "reading the image")
    image, notes = read_upload(model, image_path)
    config = options_from_rows(method, rows)
    progress(0.1, f"inverting with {method}")
    inv = invert(model, image, prompt or "", method=method, steps=int(steps), guidance=float(guidance),
                 spacing=None if spacing == SPACINGS[0] else spacing, keep_trajectory=True, **config)
    progress(0.7, "reconstructing")
    z_hat = reconstruct(model, inv, decode=False)
    recon = model.decode(z_hat)
    metrics = summary(image, recon, inv.z0, z_hat)
    metrics["vae_ceiling_psnr"] = summary(image, model.decode(inv.z0))["psnr"]
    metrics.update(seconds=inv.stats["seconds"], nfe=inv.stats["nfe"], alpha_T=inv.stats.get("alpha_T"))
    progress(0.9, "per-step residuals")
    residuals = step_residuals(model, inv)
    inv.trajectory = None  # the download holds what replays the image, not the whole path
    path = inv.save(os.path.join(outdir, "inversion.safetensors"))
    return {"reconstruction": picture(recon), "error": error_map(image, recon), "metrics": metrics,
            "figure": residual_figure(residuals, method), "file": path, "notes": notes}


def reconstruct_job(model, file_path: str | None) -> np.ndarray:
    """Regenerate the image of an uploaded ``.safetensors`` inversion with the served model."""
    from inversa.inversion.api import reconstruct
    from inversa.io.result import Inversion

    if not file_path:
        raise InversaError("upload an inversion (.safetensors) first")
    return picture(reconstruct(model, Inversion.load(file_path))[:1])


def edit_job(model, image_path, source: str, target: str, method: str, steps: int, guidance: float,
             cross_replace: float, blend: str, embedded: bool, progress=_done) -> dict:
    """Edit one image; the embedded model's prompts are mapped onto its caption template first."""
    from inversa.editing.edit import edit

    progress(0.0, "reading the image")
    image, notes = read_upload(model, image_path)
    if embedded:
        from inversa.tiny.prompts import template_pair

        mapped = template_pair(source, target)
        if mapped != (source, target):
            notes.append(f"prompts in the embedded model's template: '{mapped[0]}' -> '{mapped[1]}'")
        source, target = mapped
    progress(0.1, f"inverting with {method} and sampling both branches")
    result = edit(model, image, source, target, method=method, steps=int(steps), guidance=float(guidance),
                  cross_replace=float(cross_replace), blend=blend.strip() or None, full=True)
    difference = (result.images - result.source).abs().mean(dim=-3, keepdim=True).expand_as(result.source) * 2 - 1
    return {"source": picture(result.source), "edited": picture(result.images), "difference": picture(difference),
            "notes": notes}


def interpolate_job(model, path_a, path_b, alphas: str, method: str, steps: int,
                    progress=_done) -> tuple[list[tuple[np.ndarray, str]], list[str]]:
    """Frames between two images, each with its alpha as caption, and the notes on reading the images."""
    from inversa.editing.interpolate import interpolate

    try:
        values = [float(a) for a in alphas.replace(",", " ").split()]
    except ValueError:
        raise InversaError(f"alphas must be numbers in [0, 1] separated by spaces; got {alphas!r}") from None
    progress(0.0, "reading the images")
    a, notes = read_upload(model, path_a, "image A")
    b, more = read_upload(model, path_b, "image B")
    progress(0.1, f"inverting both with {method}")
    frames = interpolate(model, a, b, values, method=method, steps=int(steps))
    return [(picture(frame), f"alpha = {alpha:g}") for frame, alpha in zip(frames, values)], notes + more


def metric_rows(metrics: dict) -> list[list[str]]:
    """The metrics table: a label and 4 significant digits for each metric present."""
    names = {"psnr": "PSNR (dB)", "ssim": "SSIM", "latent_mse": "latent MSE", "vae_ceiling_psnr": "VAE ceiling (dB)",
             "seconds": "time (s)", "nfe": "NFE", "alpha_T": "terminal alpha_T"}
    return [[label, f"{metrics[key]:.4g}"] for key, label in names.items() if metrics.get(key) is not None]


# the page ------------------------------------------------------------------------------------------------------------

def example_images(folder: str) -> dict[str, str]:
    """Bundled pictures to pick from: photos from scikit-image and two of the embedded model's shapes."""
    from PIL import Image
    from skimage import data

    from inversa.tiny import shapes

    paths = {}
    for name in ("astronaut", "chelsea", "coffee"):
        paths[name] = os.path.join(folder, f"{name}.png")
        Image.fromarray(getattr(data, name)()).resize((128, 128), Image.LANCZOS).save(paths[name])
    for shape, colour in (("circle", "red"), ("square", "yellow")):
        paths[shape] = os.path.join(folder, f"{colour}_{shape}.png")
        Image.fromarray(shapes.render(shapes.nominal(shape, colour, "large", "center"))[0]).save(paths[shape])
    return paths


def one_line(message) -> str:
    return html.escape(" ".join(str(message).split()))


def upload_component(gr):
    """``gr.Image`` that hands any uploaded file to the job as its path, so that inversa's one reader judges it.

    Gradio's own preprocessing opens the upload with PIL first: random bytes or a
    decompression bomb would fail there, before the job, with a generic error.
    """
    class Upload(gr.Image):
        is_template = True  # the page draws it as the Image it extends

        def preprocess(self, payload):
            try:
                return super().preprocess(payload)
            except Exception:  # noqa: BLE001 - read_upload gives the one-line reason
                path = getattr(payload, "path", None)
                if path is None:
                    raise gr.Error("cannot read the upload", print_exception=False) from None
                return str(path)
    return Upload


def _page_errors(gr, fn):
    """An InversaError, or any failure to read an upload, becomes the page's one-line message
    (HTML-escaped), never Gradio's generic error and a traceback."""
    @functools.wraps(fn)  # Gradio reads the job's signature (its gr.Progress) through the wrapper
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InversaError as exc:
            raise gr.Error(one_line(exc), print_exception=False) from None
        except (OSError, ValueError, EOFError, RecursionError) as exc:  # what a damaged upload makes readers raise
            raise gr.Error(one_line(f"cannot read the upload ({type(exc).__name__}: {exc})"),
                           print_exception=False) from None
    return wrapped


def _jobs(gr, model, workdir: str, embedded: bool) -> dict:
    """The page's four jobs on ``model``, each showing its notes as warnings and its errors as one line."""
    def show(notes):
        for note in dict.fromkeys(notes):
            gr.Warning(html.escape(note))

    def do_invert(image, prompt, method, steps, guidance, spacing, rows, progress=gr.Progress(track_tqdm=True)):
        out = invert_job(model, image, prompt, method, steps, guidance, spacing, rows,
                         tempfile.mkdtemp(dir=workdir), progress)
        show(out["notes"])
        return out["reconstruction"], out["error"], metric_rows(out["metrics"]), out["figure"], out["file"]

    def do_reconstruct(path):
        return reconstruct_job(model, path)

    def do_edit(image, source, target, method, steps, guidance, cross, blend, progress=gr.Progress(track_tqdm=True)):
        out = edit_job(model, image, source, target, method, steps, guidance, cross, blend, embedded, progress)
        show(out["notes"])
        return out["source"], out["edited"], out["difference"]

    def do_interpolate(a, b, alphas, method, steps, progress=gr.Progress(track_tqdm=True)):
        frames, notes = interpolate_job(model, a, b, alphas, method, steps, progress)
        show(notes)
        return frames

    jobs = {"invert": do_invert, "reconstruct": do_reconstruct, "edit": do_edit, "interpolate": do_interpolate}
    return {name: _page_errors(gr, fn) for name, fn in jobs.items()}


def _invert_tab(gr, upload, examples: dict, methods: list[str], jobs: dict, queue: dict) -> None:
    with gr.Row():
        with gr.Column():
            image = upload(type="filepath", label="image", elem_id="invert-image", height=256)
            gr.Examples([[p] for p in examples.values()], inputs=[image], label="bundled images")
            prompt = gr.Textbox(label="prompt (empty: unconditional)", value="")
            method = gr.Dropdown(methods, value=PAGE_METHOD, label="method", elem_id="invert-method")
            with gr.Row():
                steps = gr.Number(PAGE_STEPS, label="steps", precision=0, minimum=1)
                guidance = gr.Number(1.0, label="guidance", minimum=0)
                spacing = gr.Dropdown(list(SPACINGS), value=SPACINGS[0], label="timestep spacing")
            options = gr.Dataframe(option_rows(PAGE_METHOD), headers=["option", "value", "accepts"],
                                   datatype="str", type="array", static_columns=[0, 2], interactive=True,
                                   label="method options (edit the value column)", elem_id="invert-options")
            run_invert = gr.Button("Invert", variant="primary", elem_id="invert-button")
        with gr.Column():
            with gr.Row():
                recon = gr.Image(label="reconstruction", elem_id="invert-reconstruction", height=256)
                error = gr.Image(label="error map |x - x_hat| (full scale 0.25)", elem_id="invert-error", height=256)
            metrics = gr.Dataframe(headers=["metric", "value"], label="metrics", elem_id="invert-metrics",
                                   interactive=False)
            plot = gr.Plot(label="per-step residual", elem_id="invert-plot")
            download = gr.File(label="inversion (.safetensors)", elem_id="invert-download")
    method.change(option_rows, method, options, queue=False)
    run_invert.click(jobs["invert"], [image, prompt, method, steps, guidance, spacing, options],
                     [recon, error, metrics, plot, download], **queue)


def _reconstruct_row(gr, jobs: dict, queue: dict) -> None:
    with gr.Row():
        saved = gr.File(label="reconstruct a saved inversion", file_types=[".safetensors"], elem_id="reconstruct-file")
        rebuilt = gr.Image(label="reconstruction of the saved inversion", elem_id="reconstruct-image", height=256)
    run_rebuild = gr.Button("Reconstruct", elem_id="reconstruct-button")
    run_rebuild.click(jobs["reconstruct"], [saved], [rebuilt], **queue)


def _edit_tab(gr, upload, examples: dict, methods: list[str], jobs: dict, queue: dict, embedded: bool) -> None:
    from inversa.cli.edit import EMBEDDED_HELP
    from inversa.editing.recipes import RECIPES

    with gr.Row():
        with gr.Column():
            edit_image = upload(type="filepath", label="image", elem_id="edit-image", height=256)
            source = gr.Textbox(label="source prompt", value="a red circle", elem_id="edit-source")
            target = gr.Textbox(label="target prompt", value="a green circle", elem_id="edit-target")
            gr.Examples([[examples["circle"], "a red circle", "a green circle"],
                         [examples["square"], "a yellow square", "a yellow star"]],
                        inputs=[edit_image, source, target], label="bundled images")
            if embedded:
                gr.Markdown("```\n" + EMBEDDED_HELP.split("\nKeep the background")[0] + "\n```")
            edit_method = gr.Dropdown(methods + sorted(RECIPES), value="ddim", label="method")
            with gr.Row():
                edit_steps = gr.Number(6, label="steps", precision=0, minimum=1)
                edit_guidance = gr.Number(7.5, label="guidance", minimum=0)
            cross = gr.Slider(0, 1, value=0.4, step=0.05, label="cross-attention fraction (prompt-to-prompt)")
            blend = gr.Textbox(label="local blend: 'SOURCE_WORD TARGET_WORD' (empty: off)", value="")
            run_edit = gr.Button("Edit", variant="primary", elem_id="edit-button")
        with gr.Column():
            with gr.Row():
                outs = [gr.Image(label=name, elem_id=f"edit-{name}", height=192)
                        for name in ("source", "edited", "difference")]
    run_edit.click(jobs["edit"], [edit_image, source, target, edit_method, edit_steps, edit_guidance, cross, blend],
                   outs, **queue)


def _interpolate_tab(gr, upload, examples: dict, methods: list[str], jobs: dict, queue: dict) -> None:
    with gr.Row():
        image_a = upload(type="filepath", label="image A", elem_id="interp-a", height=192)
        image_b = upload(type="filepath", label="image B", elem_id="interp-b", height=192)
    gr.Examples([[examples["astronaut"], examples["chelsea"]], [examples["circle"], examples["square"]]],
                inputs=[image_a, image_b], label="bundled pairs")
    with gr.Row():
        alphas = gr.Textbox("0 0.25 0.5 0.75 1", label="alphas (0 = A, 1 = B)")
        interp_method = gr.Dropdown(methods, value="ddim", label="method")
        interp_steps = gr.Number(PAGE_STEPS, label="steps", precision=0, minimum=1)
    run_interp = gr.Button("Interpolate", variant="primary", elem_id="interp-button")
    frames = gr.Gallery(label="frames", columns=5, elem_id="interp-frames")
    run_interp.click(jobs["interpolate"], [image_a, image_b, alphas, interp_method, interp_steps], frames, **queue)


def build(model, model_label: str, embedded: bool = False):
    """The Gradio page (not launched) serving ``model``."""
    import gradio as gr

    from inversa.methods import available

    upload = upload_component(gr)
    workdir = tempfile.mkdtemp(prefix="inversa-serve-")
    examples = example_images(workdir)
    methods = available()
    queue = {"concurrency_limit": 1, "concurrency_id": "model"}  # one job at a time on the model, the rest wait
    jobs = _jobs(gr, model, workdir, embedded)
    with gr.Blocks(title="inversa") as page:
        gr.Markdown(f"## inversa: precise diffusion inversion\nModel: `{model_label}` ({model.family}, "
                    f"{model.prediction}). One job at a time; others wait in the queue. Small images are shown enlarged.")
        with gr.Tab("Invert", elem_id="tab-invert"):
            _invert_tab(gr, upload, examples, methods, jobs, queue)
            _reconstruct_row(gr, jobs, queue)
        with gr.Tab("Edit", elem_id="tab-edit"):
            _edit_tab(gr, upload, examples, methods, jobs, queue, embedded)
        with gr.Tab("Interpolate", elem_id="tab-interpolate"):
            _interpolate_tab(gr, upload, examples, methods, jobs, queue)
    page.queue(max_size=32)
    return page, workdir


# the command ---------------------------------------------------------------------------------------------------------

def run(args) -> int:
    import sys

    from inversa.cli.common import open_model

    if not 0 < args.port < 65536:
        raise InversaError(f"--port must be in 1..65535; got {args.port}")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no calls home: the page works offline
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise InversaError(EXTRA_HINT) from None
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: serving on {args.host}: anyone who reaches this address can run jobs on this machine",
              file=sys.stderr)
    model = open_model(args)
    page, workdir = build(model, args.model or "embedded model", embedded=args.model is None)
    try:
        page.launch(server_name=args.host, server_port=args.port, max_file_size=f"{MAX_UPLOAD_MB}mb",
                    allowed_paths=[workdir], show_error=False, footer_links=[], inbrowser=False, quiet=False)
    except OSError as exc:
        why = "the port is in use; choose another with --port" if "empty port" in str(exc) else str(exc)
        raise InversaError(f"cannot serve on {args.host}:{args.port}: {why}") from None
    return 0


def add_command(sub) -> None:
    from inversa.cli.common import add_model_args

    p = sub.add_parser("serve", help="a local web page to invert, inspect, edit and interpolate (needs the ui extra)")
    add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(run=run)
