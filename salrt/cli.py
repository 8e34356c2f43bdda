"""The ``salrt`` command line: export, explain, serve, evaluate, info, bench."""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import signal
import sys
import warnings
from pathlib import Path

import click

from .dataset import DEFAULT_SAVE, ON_ERROR, RAY_AUTO
from .dataset.index import FORMATS as INDEX_FORMATS
from .errors import InputError, Interrupted, SalrtError
from .evaluate import RANDOMIZATION_CUTS
from .formats import AUTO, BACKENDS, FORMATS, MEASURED_BACKENDS, QUICK_BACKENDS
from .formats.triton import REPOSITORY_DEFAULTS
from .formats.triton_config import INSTANCE_KINDS
from .server.process import QUEUE_DELAY_MS, ServeOptions

_SERVE = ServeOptions()  # salrt serve's defaults: stated once, in ServeOptions


class _Cli(click.Group):
    """Prints a SalrtError as one line and exits 1: users get the reason, not a traceback. A run stopped by
    Ctrl-C or SIGTERM says how to resume it and exits 130 or 143, as the signal would have."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SalrtError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)
        except KeyboardInterrupt as err:
            click.echo(f"interrupted: {err}" if isinstance(err, Interrupted) else "interrupted", err=True)
            sys.exit(getattr(err, "exit_code", 128 + signal.SIGINT))


@click.group(cls=_Cli)
@click.version_option(package_name="salrt")
def main():
    """Gradient saliency maps as deployable graphs."""
    # PIL warns about large images as it opens them; salrt refuses those with an error line of its own.
    from PIL import Image
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _progress(message: str) -> None:
    click.echo(f"  {message}", err=True)


def _flag(field: str) -> str:
    """A Method field's option: ig_method -> --ig-method (the field "name" is --method)."""
    return "--method" if field == "name" else "--" + field.replace("_", "-")


def _with_flags(err: SalrtError, fields) -> SalrtError:
    """``err`` with the Method fields it names as the options a user typed."""
    message = str(err)
    for field in fields:
        message = re.sub(rf"(?<![\w-]){field}(?= must)|(?<=unknown ){field}(?= ')", _flag(field), message)
    return type(err)(message)


def _method_options(command):
    """--method and its parameters (salrt.graph.Method); the command receives ``method``: a Method or None."""
    from .graph.methods import CHOICES, METHODS, Method
    defaults = Method()
    options = [
        click.option("--method", type=click.Choice(METHODS), default=None,
                     help="what to attribute with [default: saliency; an artifact: the one it was exported with]"),
        click.option("--samples", type=int, default=defaults.samples, show_default=True, help="smoothgrad family"),
        click.option("--noise", type=float, default=defaults.noise, show_default=True,
                     help="smoothgrad family: noise std as a fraction of each image's value range"),
        click.option("--seed", type=int, default=defaults.seed, show_default=True, help="smoothgrad family: the noise"),
        click.option("--steps", type=int, default=defaults.steps, show_default=True, help="integrated_gradients"),
        click.option("--ig-method", type=click.Choice(CHOICES["ig_method"]), default=defaults.ig_method,
                     show_default=True),
        click.option("--baseline", type=click.Choice(CHOICES["baseline"]), default=defaults.baseline, show_default=True,
                     help="integrated_gradients: zeros (normalized space) or a black image"),
        click.option("--chunk", type=int, default=0, help="samples per forward+backward step [default: from the size]"),
        click.option("--layer", default="", help="CAM family: module path(s) of the model, comma-separated (their "
                                                 "maps averaged)  [default: chosen for the model]"),
    ]

    @functools.wraps(command)
    def with_method(*args, method, samples, noise, seed, steps, ig_method, baseline, chunk, layer, **kwargs):
        if layer and not method:
            raise InputError("--layer: give the CAM method it is for (--method gradcam, ...)")
        chosen = method and Method(method, samples=samples, noise=noise, seed=seed, steps=steps, ig_method=ig_method,
                                   baseline=baseline, chunk=chunk, layer=layer)
        if chosen:
            try:
                chosen.check()
            except SalrtError as err:
                raise _with_flags(err, [f.name for f in dataclasses.fields(Method)]) from None
        return command(*args, method=chosen, **kwargs)
    for option in reversed(options):
        with_method = option(with_method)
    return with_method


def methods_table() -> str:
    """The README's table of methods, from salrt.graph.methods.REGISTRY (tests/test_methods.py keeps them equal)."""
    from .graph.methods import CHOICES, REGISTRY, Method
    defaults = Method()
    rows = ["| `--method` | attribution (`grad` output, `Explanation.attribution`) | parameters (default) |",
            "|---|---|---|"]
    for spec in REGISTRY.values():
        parameters = ", ".join(f"`{_flag(field)}` " + (" \\| ".join(CHOICES[field]) if field in CHOICES
                                                       else f"({getattr(defaults, field) or 'chosen for the model'})")
                               for field in spec.parameters)
        default = " (default)" if spec.name == defaults.name else ""
        rows.append(f"| `{spec.name}`{default} | {spec.attribution} | {parameters} |")
    return "\n".join(rows)


def contract_table() -> str:
    """The README's table of graph inputs and outputs, from salrt.graph.io (tests/test_segmentation.py keeps them
    equal)."""
    from .graph.io import DENSE_LOGITS, INPUTS, OUTPUTS, QUERY_LOGITS, TASK_INPUTS
    rows = ["| | name | dtype | shape | what |", "|---|---|---|---|---|"]
    for kind, tensors in (("input", (*INPUTS, *TASK_INPUTS.values())),
                          ("output", (OUTPUTS["logits"], DENSE_LOGITS, QUERY_LOGITS, *list(OUTPUTS.values())[1:]))):
        for t in tensors:
            note = t.note + (f" (default {t.default}: callers may leave it out)" if t.default is not None else "") \
                + (f"; in [{t.range[0]}, {t.range[1]}]" if t.range else "")
            note = note.replace("|", "\\|")
            rows.append(f"| {kind} | `{t.name}` | {t.dtype} | [{','.join(map(str, t.shape))}] | {note} |")
    return "\n".join(rows)


def _size(text: str):
    """"224" -> 224; "128x96" -> (128, 96) (height x width)."""
    try:
        parts = [int(part) for part in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise click.BadParameter(f"expected N or HxW, got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def _model_options(command):
    """What a model source does not say, or says wrongly for the user's model (salrt.models): the command
    receives ``model_options``, the keyword arguments of ``salrt.export`` / ``salrt.load`` for a model."""
    from .models.spec import INTERPOLATIONS, LOGITS_RANK
    options = [
        click.option("--classes", "categories", default=None, metavar="FILE",
                     help="class names: one per line, or JSON (a list or {index: name}); 'imagenet' for ImageNet's "
                          "1000 [default: the source's; a custom model: class 0, class 1, ...]"),
        click.option("--channels", type=int, default=None, help="input channels [default: the model's]"),
        click.option("--image-size", default=None, metavar="N|HxW",
                     help="input size fixed in the graph [default: the model's crop size]"),
        click.option("--mean", default=None, metavar="M[,M...]", help="normalization mean per channel"),
        click.option("--std", default=None, metavar="S[,S...]", help="normalization std per channel"),
        click.option("--resize", default=None, metavar="N|HxW", help="resize: N the short side, HxW exactly"),
        click.option("--crop", default=None, metavar="N|HxW", help="center crop (the model's input size)"),
        click.option("--interpolation", type=click.Choice(INTERPOLATIONS), default=None),
        click.option("--task", type=click.Choice(list(LOGITS_RANK)), default=None,
                     help="what the model's logits are: [N,K] classification, [N,K,H,W] segmentation, [N,Q,L] "
                          "with boxes [N,Q,4] detection [default: found from what it returns]"),
    ]

    @functools.wraps(command)
    def with_model(*args, categories, channels, image_size, mean, std, resize, crop, interpolation, task, **kwargs):
        fields = {"mean": mean and _floats(mean), "std": std and _floats(std), "resize": resize and _size(resize),
                  "crop": crop and _size(crop), "interpolation": interpolation}
        chosen = {"categories": categories, "channels": channels, "image_size": image_size and _size(image_size),
                  "task": task,
                  "preprocessing": {k: v for k, v in fields.items() if v is not None} or None}
        return command(*args, model_options={k: v for k, v in chosen.items() if v is not None}, **kwargs)
    for option in reversed(options):
        with_model = option(with_model)
    return with_model


def _dtype_option(default):
    from .graph.precision import DTYPES
    return click.option("--dtype", type=click.Choice(list(DTYPES)), default=default, show_default=default is not None,
                        help="what the graph's convolutions and matrix products compute in (inputs and outputs stay "
                             "float32; the README's dtype table says which formats run which)"
                             + ("" if default else " [default: fp32; an artifact: the one it was exported with]"))


_DEVICE_HELP = "cpu | cuda[:INDEX] (refused where this machine has no CUDA device)"
_DEVICE_OPTION = click.option("--device", default="cpu", show_default=True, help=_DEVICE_HELP)
_BACKEND_OPTION = click.option("--backend", default=AUTO, show_default=True, type=click.Choice(BACKENDS),
                               help="auto: the fastest format the artifact holds for the device")


@main.command()
@click.argument("model")
@click.option("--weights", default="default", show_default=True, help="default (pretrained) | random | PATH")
@click.option("--format", "formats", default="torchscript", show_default=True,
              help=f"comma-separated: {', '.join(FORMATS)}")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="default: ./MODEL (the part after the last ':' or '/')")
@click.option("--triton-max-batch", "max_batch", type=int, default=REPOSITORY_DEFAULTS["max_batch"],
              show_default=True, help="triton: max_batch_size, the largest batch dynamic batching forms")
@click.option("--triton-max-queue-delay-ms", "max_queue_delay_ms", type=float,
              default=REPOSITORY_DEFAULTS["max_queue_delay_ms"], show_default=True,
              help="triton: how long a request may wait for others to batch with")
@click.option("--triton-instance-kind", "instance_kind", default=REPOSITORY_DEFAULTS["instance_kind"],
              show_default=True, help=f"triton: where the model runs: {' | '.join(INSTANCE_KINDS)}")
@click.option("--triton-instances", "instances", type=int, default=REPOSITORY_DEFAULTS["instances"],
              show_default=True, help="triton: model instances (per GPU, for gpu)")
@click.option("--device", default="cpu", show_default=True,
              help="what the compiled formats (aoti, aoti_n1) are compiled for: cpu | cuda; the others run anywhere")
@_dtype_option("fp32")
@_method_options
@_model_options
def export(model, weights, formats, out_dir, device, dtype, method, model_options, **triton):
    """Export MODEL's forward + input-gradient + saliency graph.

    MODEL is a torchvision name (resnet50), efficientnet_lite0, timm:NAME, hf:PATH_OR_ID (a save_pretrained
    directory or a hub id) or package.module:attribute (an nn.Module, or a class or function making one).

    --format triton also writes triton/: a model repository for Triton Inference Server's onnxruntime backend
    and kserve.yaml, a KServe InferenceService for it.
    """
    from .artifact import export as export_model
    out_dir = out_dir or Path(re.split(r"[:/]", model.rstrip("/"))[-1])
    written = export_model(model, out_dir, formats=formats, weights=weights, progress=_progress, triton=triton,
                           device=device, dtype=dtype,
                           **({"method": method} if method else {}), **model_options)
    click.echo(f"wrote {written}/ ({', '.join(sorted(p.name for p in written.iterdir()))})")


@main.command()
@click.argument("source")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--list", "list_files", multiple=True, metavar="FILE",
              help="a file of image paths, one per line (- reads standard input); may be repeated")
@click.option("--target", default=None, metavar="CLASS",
              help="class to explain, an index or a name [default: the top class; segmentation: the most predicted, "
                   "background aside]")
@click.option("--region", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              metavar="MASK", help="segmentation: a mask image (pixels above 0) of the region whose class logits are "
                                   "summed, the same for every image [default: the pixels predicted as the class]")
@click.option("--box", default=None, metavar="X0,Y0,X1,Y1",
              help="detection: explain the query whose predicted box overlaps this one most (the model's input "
                   "pixels) [default: the top detection, of --target's class if given]")
@click.option("--top-detections", type=click.IntRange(min=1), default=None, metavar="K",
              help="detection: explain each image's K most probable detections (of --target's class, if given), a "
                   "map each: files named _det1 ... _detK, the index's detections column lists them")
@click.option("--region-dir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              metavar="DIR", help="segmentation: a mask per image, mirroring the inputs' tree (a/cat.jpg: DIR/a/cat.jpg "
                                  "or DIR/a/cat.png); an image without one fails, recorded in the index")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("salrt-out"), show_default=True)
@_BACKEND_OPTION
@_DEVICE_OPTION
@click.option("--cuda-graphs", is_flag=True, help="on CUDA: replay each batch size from a captured CUDA graph "
                                                   "(less launch overhead at small batches)")
@click.option("--weights", default="default", show_default=True, help="when SOURCE is a model name")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--save", default=",".join(DEFAULT_SAVE), show_default=True,
              help="comma-separated: png (heatmap + overlay), npy (float16 saliency map), grad (float32 "
                   "attribution .npy), index (results.parquet)")
@click.option("--index-format", type=click.Choice(INDEX_FORMATS), default="parquet", show_default=True)
@click.option("--on-error", type=click.Choice(ON_ERROR), default=None,
              help="an unreadable image: fail the run before any work, or continue and record it in the index "
                   "[default: fail for files named one by one, continue for directories, globs and lists]")
@click.option("--resume", is_flag=True, help="continue the earlier run in --out: skip inputs whose outputs and "
                                             "index row it left complete [default: replace that run, deleting "
                                             "the maps, index and gallery it wrote]")
@click.option("--html", is_flag=True, help="also write index.html: a gallery of the overlays")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="processes decoding images ahead of the model [default: one per core, at most 8]")
@click.option("--server", default=None, metavar="[grpc://]HOST:PORT",
              help="explain on a `salrt serve` server (HOST:PORT: its HTTP port; grpc://HOST:PORT: its gRPC "
                   "port); SOURCE is then the served model's name")
@click.option("--jpeg-draft", is_flag=True,
              help="decode JPEGs at 1/2, 1/4 or 1/8 size in the DCT domain, keeping twice what the model's resize "
                   "needs: several times faster on large photos; pixels (and maps) differ slightly from a full decode")
@click.option("--ray", "ray_address", is_flag=False, flag_value=RAY_AUTO, default=None, metavar="[ADDRESS]",
              help="run on Ray Data (pip install 'salrt[ray]'): the cluster at ADDRESS, else $RAY_ADDRESS's (set by "
                   "`ray job submit`), else a Ray instance on this machine; inputs and --out must be on storage "
                   "every node sees")
@click.option("--ray-concurrency", type=click.IntRange(min=1), default=None,
              help="with --ray: actors explaining at once [default: as many as the cluster's CPUs, less one, or "
                   "its GPUs with --ray-num-gpus, allow]")
@click.option("--ray-num-gpus", type=click.FloatRange(min=0), default=None,
              help="with --ray: GPUs per actor [default: 1 with --device cuda, else 0]")
@_dtype_option(None)
@_method_options
@_model_options
def explain(source, images, list_files, target, region, box, top_detections, region_dir, out_dir, backend, device, cuda_graphs, weights, batch_size, save,
            index_format, on_error, resume, html, workers, server, jpeg_draft, ray_address, ray_concurrency,
            ray_num_gpus, dtype, method, model_options):
    """Explain IMAGES with SOURCE: heatmaps, overlays, arrays and an index of classes under --out.

    IMAGES are files, directories (searched recursively for images) or globs (quote them: 'photos/**/*.jpg').
    Outputs mirror the input tree under --out (a/cat.jpg -> a/cat.jpg_saliency.png, a/cat.jpg_overlay.png);
    files named one by one keep flat names (cat_saliency.png) and print their top-5 classes. The index,
    results.parquet, has a row per image, with the error of any that failed; the exit code is then 2.

    SOURCE is a model name (run eagerly in PyTorch) or an artifact directory. A model name always means the
    model, even where a directory of that name exists: write `resnet50/` or `./resnet50` for the directory.
    With --server, SOURCE is the name `salrt serve` printed (e.g. resnet50).
    """
    from .explain import Options, explain_files, parse_save
    from .runtime import is_model_name_and_artifact
    if server and Path(source).is_file():
        raise click.UsageError(f"with --server, give the served model's name first (salrt serve prints it): "
                               f"salrt explain MODEL --server {server} {source} ...")
    if ray_address not in (None, RAY_AUTO) and Path(ray_address).exists():  # `--ray photos/`: an optional value
        raise click.UsageError(f"--ray took {ray_address!r}, a path, as the Ray cluster's address: put --ray after "
                               f"the images, or write --ray=ADDRESS")
    if not images and not list_files:
        raise click.UsageError("Missing argument 'IMAGES...' (or --list FILE).")
    if not server and is_model_name_and_artifact(source):
        _progress(f"note: {source!r} is a model name, so it runs eagerly; for the artifact directory, "
                  f"write {source + '/'!r}")
    options = Options(target=target if target is None or not target.lstrip("-").isdigit() else int(target),
                      region=region, box=box and _floats(box), top_detections=top_detections, region_dir=region_dir, backend=backend, device=device, cuda_graphs=cuda_graphs, weights=weights,
                      batch_size=batch_size, server=server, method=method, dtype=dtype, save=parse_save(save),
                      index_format=index_format,
                      on_error=on_error, resume=resume, html=html, workers=workers, jpeg_draft=jpeg_draft,
                      ray=ray_address, ray_concurrency=ray_concurrency, ray_num_gpus=ray_num_gpus,
                      model_options=model_options)
    summary = explain_files(source, list(images), out_dir, options, list_files=list_files, output=click.echo)
    click.echo(summary.line(), err=True)
    if summary.failed:
        sys.exit(2)


@main.command()
@click.argument("artifact_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--host", default=_SERVE.host, show_default=True, help="address to bind (0.0.0.0: every interface)")
@click.option("--http-port", default=_SERVE.http_port, show_default=True)
@click.option("--grpc-port", default=_SERVE.grpc_port, show_default=True)
@click.option("--metrics-port", default=_SERVE.metrics_port, show_default=True, help="Prometheus metrics")
@click.option("--backend", default=_SERVE.backend, show_default=True, type=click.Choice(BACKENDS),
              help="auto: the fastest format the artifact holds for the device")
@click.option("--device", default=_SERVE.device, show_default=True, help=_DEVICE_HELP)
@click.option("--max-batch", default=_SERVE.max_batch, show_default=True,
              help="the most rows Triton's dynamic batcher joins")
@click.option("--max-queue-delay-ms", type=float, default=_SERVE.max_queue_delay_ms,
              help="how long a request waits for others while the model is idle [default: "
                   f"{', '.join(f'{ms:g} on {device}' for device, ms in QUEUE_DELAY_MS.items())}]")
@click.option("--instances", default=_SERVE.instances, show_default=True, help="model instances (each its own process)")
@click.option("--log", "log_path", type=click.Path(path_type=Path), default=None, help="Triton's log file")
@click.option("--digest", default=_SERVE.digest, help="refuse an artifact whose digest (salrt info) is not this one")
@click.option("--shared-memory", is_flag=True, default=_SERVE.shared_memory,
              help="let clients on this host send and receive tensors through system shared memory (~1 ms less "
                   "a request); any client reaching the ports may then make Triton map /dev/shm objects it names")
def serve(artifact_dir, host, http_port, grpc_port, metrics_port, backend, device, max_batch, max_queue_delay_ms,
          instances, log_path, digest, shared_memory):
    """Serve ARTIFACT_DIR on Triton Inference Server (HTTP/gRPC, KServe v2 protocol) as two models: MODEL
    (preprocessed tensors in, the artifact's outputs) and MODEL_image (encoded JPEG/PNG in, uint8 saliency
    out). Blocks until Ctrl-C or SIGTERM; requests in flight finish first."""
    from .server import serve as run_server
    options = ServeOptions(host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                           backend=backend, device=device, max_batch=max_batch,
                           max_queue_delay_ms=max_queue_delay_ms, instances=instances, digest=digest,
                           shared_memory=shared_memory)
    sys.exit(run_server(artifact_dir, options, progress=_progress, log=log_path))


@main.command()
@click.argument("model")
@click.option("--batch", default="1,8", show_default=True, help="comma-separated batch sizes")
@click.option("--backends", default=",".join(MEASURED_BACKENDS), show_default=True,
              help="salrt backends to time next to naive (the eager recipe users copy) and forward (no saliency)")
@click.option("--weights", default="random", show_default=True)
@click.option("--rounds", default=10, show_default=True, help="timed rounds per backend and batch")
@_DEVICE_OPTION
@click.option("--dtype", "dtypes", default="fp32", show_default=True, metavar="DTYPE[,DTYPE...]",
              help="comma-separated dtypes to time side by side (fp32, bf16, fp16): a row per backend and dtype")
@click.option("--quick", is_flag=True, help=f"N=1 only, 5 rounds, only {', '.join(QUICK_BACKENDS)} (no compiled formats)")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None, help="PNG bar chart")
@click.option("--cache", type=click.Path(path_type=Path), default=Path(".salrt-bench"), show_default=True,
              help="exported artifacts are kept here and reused by later runs")
def bench(model, batch, backends, weights, rounds, device, dtypes, quick, json_path, plot_path, cache):
    """Time MODEL's saliency on every backend against the naive eager recipe."""
    from . import bench as benchmarks
    backends = [b.strip() for b in backends.split(",") if b.strip()]
    batches = [int(n) for n in batch.split(",")]
    if quick:
        batches, rounds, backends = [1], 5, [b for b in backends if b in QUICK_BACKENDS]
    report = benchmarks.benchmark(model, batches, backends, weights=weights, rounds=rounds, cache=cache,
                                  progress=_progress, device=device,
                                  dtypes=[d.strip() for d in dtypes.split(",") if d.strip()])
    click.echo(benchmarks.table(report))
    benchmarks.save(report, json_path, plot_path)


@main.command()
@click.argument("source")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--method", "methods", default=None,
              help="comma-separated methods (each with its default parameters), or all  [default: all for a "
                   "model name; an artifact's own method]")
@click.option("--metrics", default="deletion,insertion,randomization", show_default=True)
@click.option("--perturbation-steps", "--steps", "steps", default=50, show_default=True,
              help="deletion/insertion steps (--steps: the former name; export's --steps are IG's)")
@click.option("--randomization-cuts", default=RANDOMIZATION_CUTS, show_default=True,
              help="model randomization: cascading re-initializations, from the logits layer down")
@click.option("--weights", default="default", show_default=True, help="for a model name")
@click.option("--backend", type=click.Choice(BACKENDS), default=AUTO, show_default=True,
              help="for an artifact directory")
@_DEVICE_OPTION
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("evaluation"), show_default=True)
def evaluate(source, images, methods, metrics, steps, randomization_cuts, weights, backend, device, out_dir):
    """Score saliency methods on IMAGES: deletion and insertion AUC against a random ranking, and the
    model-randomization check. SOURCE is a model name (every method, run in PyTorch) or an artifact
    directory (its own method, run as deployed; scoring runs the model its manifest names in PyTorch).
    Writes report.json, curves.png, randomization.png and methods.png (every method's map on every image,
    labelled) to --out."""
    from .evaluate import evaluate as run_evaluation, parse_methods, table
    report = run_evaluation(source, list(images), parse_methods(methods),
                            [m.strip() for m in metrics.split(",") if m.strip()], out_dir, steps=steps,
                            randomization_steps=randomization_cuts,
                            weights=weights, backend=backend, device=device)
    click.echo(table(report))
    click.echo(f"wrote {out_dir}/ (report.json, curves.png, randomization.png, methods.png)")


@main.command()
@click.argument("artifact_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the whole manifest as JSON")
def info(artifact_dir, as_json):
    """Print an artifact's manifest and its digest (pin it with `salrt serve --digest`, salrt.load(digest=...)
    or salrt_explain --digest)."""
    from .artifact import digest, read_manifest
    manifest = read_manifest(artifact_dir)
    if as_json:
        click.echo(json.dumps(manifest, indent=1))
        return
    shown = {k: v for k, v in manifest.items() if k not in ("categories", "inputs", "outputs", "files")}
    shown["digest"] = digest(artifact_dir)
    for key, value in shown.items():
        click.echo(f"{key:16} {value}")
    click.echo(f"{'classes':16} {len(manifest['categories'])}")
    for fmt, entry in manifest["files"].items():
        files = entry.get("files", {entry["file"]: entry})  # a directory's entry lists its files
        for label, (name, file) in zip([fmt] + [""] * len(files), files.items()):
            click.echo(f"{label:16} {name}  {file['bytes'] / 1e6:.1f} MB  sha256 {file['sha256'][:16]}…")
    click.echo("inputs           " + ", ".join(f"{io['name']} {io['dtype']}{io['shape']}" for io in manifest["inputs"]))
    click.echo("outputs          " + ", ".join(f"{io['name']} {io['dtype']}{io['shape']}" for io in manifest["outputs"]))


if __name__ == "__main__":
    main()
