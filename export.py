"""Export a checkpoint: safetensors (weights and model facts, no pickle) or ONNX (dynamic sizes).

Examples::

    python export.py --ckpt snapshots/CS_scenes_40000.pth --format safetensors --output model.safetensors
    python export.py --ckpt snapshots/CS_scenes_40000.pth --format onnx --output model.onnx

The safetensors header holds the checkpoint's ``meta`` (network, method, num_classes, dataset,
normalize), so every tool's ``--ckpt`` and ``train.py --restore-from`` take the file alone. The
ONNX model takes a normalised ``image`` ``[batch, 3, height, width]`` (any size; the metadata
``input`` says how to normalise) and returns ``logits`` ``[batch, classes, height, width]``;
ONNX export needs the development package ``onnx`` (``onnxscript`` too for ``--exporter dynamo``;
``onnxruntime``, when installed, checks the file at three other sizes before it is written).
"""

from __future__ import annotations

import argparse
import os

from engine import cli
from engine.export import (
    DEFAULT_EXPORT_SIZE,
    EXPORTERS,
    FORMATS,
    export_onnx,
    export_safetensors,
)
from engine.models import build_model, model_meta, model_num_classes, resolve_model_args
from engine.prediction import CKPT_HELP
from inplace_abn import ABN
from network.weights import load_weights

PROG = os.path.basename(__file__)
SUFFIXES = {".safetensors": "safetensors", ".onnx": "onnx"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--ckpt",
        "--restore-from",
        dest="ckpt",
        required=True,
        help=CKPT_HELP,
    )
    parser.add_argument(
        "--output",
        required=True,
        type=cli.output_file,
        help="file to write (atomically; its folder is created)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="default: from the --output suffix (.safetensors, .onnx)",
    )
    cli.add_model_args(parser, from_checkpoint=True)
    cli.add_recorded_data_args(parser, "recorded with the weights", "recorded with the weights")
    parser.add_argument(
        "--export-size",
        type=cli.image_size,
        default=cli.image_size(",".join(str(s) for s in DEFAULT_EXPORT_SIZE)),
        help="H,W of the sample traced for ONNX; the graph takes any size",
    )
    parser.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="torchscript",
        help="ONNX: torchscript (tracing, seconds) or dynamo (torch.export, minutes on a small "
        "CPU); both refuse graphs fixed to the export size",
    )
    cli.add_switch(
        parser,
        "--verify",
        "ONNX: run the file with onnxruntime at three other sizes before writing it "
        "(--no-verify: skip)",
        default=True,
    )
    return parser


def output_format(args: argparse.Namespace) -> str:
    if args.format is not None:
        return args.format
    suffix = os.path.splitext(args.output)[1].lower()
    if suffix not in SUFFIXES:
        raise cli.UserError(
            f"--output {args.output}: give --format {' or '.join(FORMATS)} "
            "(or name the file .safetensors / .onnx)"
        )
    return SUFFIXES[suffix]


def main(args: argparse.Namespace) -> str:
    """Read and check everything (exit status 2 on a user error), then export (status 1)."""
    try:
        kind = output_format(args)
        resolve_model_args(args, args.ckpt)
        num_classes = model_num_classes(args)
        model = build_model(args, num_classes, norm_layer=ABN)
        load_weights(model, args.ckpt)
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    except cli.user_errors() as error:
        cli.report(PROG, error, 0, cli.USAGE_STATUS)
    meta = model_meta(args, num_classes)
    try:
        if kind == "safetensors":
            export_safetensors(model, meta, args.output)
        else:
            export_onnx(
                model.eval(),
                meta,
                args.output,
                tuple(args.export_size),
                exporter=args.exporter,
                verify=args.verify,
            )
    except cli.user_errors() as error:
        cli.report(PROG, error, 0, cli.RUN_STATUS)
    print(
        f"wrote {args.output} ({kind}, {meta['network']}_{meta['method']}, {num_classes} classes)"
    )
    return args.output


if __name__ == "__main__":
    main(get_args_parser().parse_args())
