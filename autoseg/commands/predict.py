"""``autoseg predict``: segment every scan of a folder, or the image series of a study on a DICOMweb
server (:mod:`autoseg.pacs.dicomweb`), with trained models."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from autoseg.commands.train import parse_folds
from autoseg.errors import AutosegInputError
from autoseg.inference.mirroring import MAX_MIRRORING_DICE_LOSS, choose_mirroring
from autoseg.utils.files import output_folder_problem

#: ``--backend`` values (the names in :data:`autoseg.inference.backends.BACKENDS`, plus ``auto``; spelled
#: out here so that ``--help`` does not import torch).
BACKEND_CHOICES = ["torch", "auto", "onnxruntime", "openvino"]
#: Where ``--dicomweb`` keeps downloaded instances, under the output folder (a dot: never read as input).
DICOMWEB_FOLDER = ".dicomweb"


def add_parser(subparsers) -> None:
    """Register ``autoseg predict``."""
    parser = subparsers.add_parser(
        "predict", help="segment new scans with trained models",
        description=("Segment every case in a folder ({case}_0000{ending}, one file per channel, any supported "
                     "format). Each segmentation is written in the input's own format and geometry. By default "
                     "the models and postprocessing chosen by `autoseg ensemble` are used; otherwise give -c. "
                     "A case that cannot be read is reported and skipped; the exit code is 1 if any failed. "
                     "With --dicomweb URL --study UID the study's image series are fetched from a DICOMweb "
                     "server instead (each series one case, named by its Series Instance UID) and, with "
                     "--store, their DICOM-SEGs are sent back."))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-i", "--input", help="folder of scans to segment")
    source.add_argument("--dicomweb", metavar="URL",
                        help="DICOMweb root of a PACS (e.g. https://pacs/dicom-web): segment the image series of "
                             "--study (QIDO-RS, WADO-RS); instances are kept in OUTPUT/.dicomweb/STUDY/SERIES/, so a "
                             "rerun downloads only series it had not finished. Credentials: $AUTOSEG_DICOMWEB_TOKEN "
                             "(bearer), $AUTOSEG_DICOMWEB_USER + $AUTOSEG_DICOMWEB_PASSWORD (basic) or --dicomweb-auth")
    parser.add_argument("--study", metavar="UID", help="with --dicomweb: the Study Instance UID to segment")
    parser.add_argument("--store", action="store_true",
                        help="with --dicomweb: send each DICOM-SEG back to the server (STOW-RS). Implies "
                             "--output-format dicom-seg; the SEG files stay in OUTPUT too, and those already "
                             "stored (listed in OUTPUT/.dicomweb/STUDY/.stored) are not sent again")
    parser.add_argument("--dicomweb-auth", metavar="FILE",
                        help="file whose first line is 'Bearer TOKEN' or 'user:password' (chmod 600; a file "
                             "every user may read is refused); it takes precedence over the environment variables")
    parser.add_argument("-o", "--output", required=True, help="folder for the segmentations")
    parser.add_argument("--trust-key", action="append", default=None, metavar="PUBLIC.pem",
                        help="open only a bundle signed by this Ed25519 public key (a file, or a folder of *.pem/*.pub "
                             "keys; repeatable; also $AUTOSEG_TRUSTED_KEYS); unsigned bundles and work folders are "
                             "refused (pip install 'autoseg[sign]')")
    parser.add_argument("-m", "--model", required=True,
                        help="work folder with trained models (from autoseg train), or a model.zip from autoseg export")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configuration(s) to use; several are averaged (default: from inference_plan.json)")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds to average (default: every trained fold)")
    parser.add_argument("--checkpoint", choices=["final", "best"], default=None,
                        help="which checkpoint of each fold (default: final)")
    parser.add_argument("--device", default=None, help="cuda, cpu or mps (default: detected)")
    mirroring = parser.add_mutually_exclusive_group()
    mirroring.add_argument("--tta", nargs="?", const="all", default=None, metavar="AXES",
                           help="test-time mirroring even where cross-validation measured no gain from it: over "
                                "every axis mirrored in training (--tta or --tta all), or only over the array axes "
                                "named (--tta yx: in-plane only, half the passes of all in 3D). Default: per "
                                "configuration, on a CPU the cheapest setting within "
                                f"{MAX_MIRRORING_DICE_LOSS} Dice of the best measured in cross-validation")
    mirroring.add_argument("--no-tta", action="store_true",
                           help="no test-time mirroring (4x faster in 2D, 8x in 3D than all axes)")
    parser.add_argument("--step-size", type=float, default=0.5,
                        help="sliding-window step as a fraction of the patch (default 0.5)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write {case}.npz (class probabilities) and {case}.json (geometry) for ensembling")
    parser.add_argument("--no-postprocessing", action="store_true",
                        help="skip the postprocessing learned by autoseg ensemble")
    parser.add_argument("--overwrite", action="store_true", help="predict cases whose output already exists")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="torch",
                        help="where the networks run on a CPU: torch (default), onnxruntime or openvino (pip install "
                             "'autoseg[fast]'), or auto: the fastest measured on this machine (cached)")
    parser.add_argument("--num-parts", type=int, default=1,
                        help="split the cases into this many parts (each run, e.g. on its own machine, predicts one)")
    parser.add_argument("--part-id", type=int, default=0,
                        help="which part this run predicts, 0..num-parts-1 (every num-parts-th sorted case)")
    parser.add_argument("--preview", action="store_true",
                        help="also write {case}_preview.png: the segmentation over axial, coronal and sagittal "
                             "slices through the largest structure")
    parser.add_argument("--output-format", choices=["nifti", "dicom-seg"], default=None,
                        help="nifti (default): each segmentation in its input's format, NIfTI for DICOM series; "
                             "dicom-seg (default with --store): a DICOM Segmentation per DICOM series case, "
                             "referencing it")
    parser.add_argument("--seg-concepts", default=None, metavar="JSON",
                        help="DICOM-SEG: coded concepts per label name, {\"liver\": {\"category\": [value, "
                             "scheme, meaning], \"type\": [...]}} (default: SNOMED CT 'Anatomical structure')")
    parser.set_defaults(handler=run)


def mirroring_setting(tta: str | None) -> bool | str:
    """``--tta [AXES]`` as a predictor setting: True for all, False for none/absent, else the axis letters."""
    if tta is None or tta == "none":
        return False
    if tta == "all":
        return True
    letters = "".join(sorted(set(tta.lower()), key="zyx".index)) if set(tta.lower()) <= set("zyx") else None
    if not letters:
        raise AutosegInputError(f"--tta {tta!r}: give all, none or array axes such as yx or zyx")
    return letters


def loaded_predictor(args: argparse.Namespace):
    """``(model, choice, predictor, device, mirroring_reason)`` from a command's model options (``-m``,
    ``--trust-key``, ``-c``, ``-f``, ``--checkpoint``, ``--device``, ``--tta``/``--no-tta``, ``--backend``):
    the networks loaded once, as ``serve`` and ``listen`` keep them."""
    from autoseg.inference.bundle import model_work_dir
    from autoseg.inference.predict_folder import FolderPredictor, choose_models
    from autoseg.model.device import prepare_device

    device = prepare_device(args.device)
    model = model_work_dir(args.model, trusted_keys=args.trust_key)
    choice = choose_models(model, args.configurations, parse_folds(args.folds) if args.folds else None,
                           args.checkpoint)
    use_mirroring, mirroring_reason = mirroring_from_arguments(args, model, choice, device.type)
    predictor = FolderPredictor(model, choice, device, use_mirroring, backend=args.backend)
    return model, choice, predictor, device, mirroring_reason


def mirroring_from_arguments(args: argparse.Namespace, model, choice, device_type: str):
    """The mirroring setting(s) and why: ``--tta``/``--no-tta`` when given, else per configuration as
    cross-validation measured (:func:`autoseg.inference.mirroring.choose_mirroring`) for ``device_type``.
    ``model``: the work folder; ``choice``: the :class:`~autoseg.inference.predict_folder.InferenceChoice`."""
    if args.tta is not None or args.no_tta:
        setting = mirroring_setting(args.tta)
        return setting, f"test-time mirroring {describe_setting(setting)} (command line)"
    return choose_mirroring(model, choice.configurations, choice.folds, choice.checkpoint, device_type=device_type)


def describe_setting(setting: bool | str) -> str:
    """How a mirroring setting reads in the log."""
    if setting is True:
        return "on (every axis mirrored in training)"
    return "off" if setting is False else f"over axes {setting}"


def output_format_of(args: argparse.Namespace) -> str:
    """The output format, after checking that --study/--store/--dicomweb-auth come with --dicomweb and that
    --store (which sends DICOM-SEGs) is not asked for NIfTI."""
    if args.dicomweb is None:
        given = {"--study": args.study, "--store": args.store, "--dicomweb-auth": args.dicomweb_auth}
        for option in (option for option, value in given.items() if value):
            raise AutosegInputError(f"{option} needs --dicomweb URL (it is about a study on a DICOMweb server)")
    elif not args.study:
        raise AutosegInputError("--dicomweb needs --study STUDY_INSTANCE_UID: the study to segment")
    if args.store:
        if args.output_format == "nifti":
            raise AutosegInputError("--store sends DICOM-SEGs back: give --output-format dicom-seg (its default "
                                    "with --store), not nifti")
        return "dicom-seg"
    return args.output_format or "nifti"


def fetch_from_dicomweb(args: argparse.Namespace):
    """Check the server and the credentials, download the study's image series (:mod:`autoseg.pacs.dicomweb`):
    ``(client, url, download)``."""
    from autoseg.pacs import dicomweb
    from autoseg.pacs.credentials import resolve_credentials

    url = dicomweb.check_url(args.dicomweb)
    study = dicomweb.check_uid(args.study, "--study")
    credentials = resolve_credentials(args.dicomweb_auth)
    warning = dicomweb.plain_http_warning(url, credentials)
    if warning:
        print(warning, file=sys.stderr)
    client = dicomweb.connect(url, credentials)
    print(f"dicomweb: {url}, study {study}, {credentials.describe() if credentials else 'no credentials'}")
    download = dicomweb.fetch_study(client, url, study, Path(args.output) / DICOMWEB_FOLDER)
    return client, url, download


def run(args: argparse.Namespace) -> int:
    """Handler of ``autoseg predict``."""
    # Deferred for start-up time: inference imports torch.
    from autoseg.inference.bundle import model_work_dir
    from autoseg.inference.case_report import AGREEMENT_THRESHOLD
    from autoseg.inference.predict_folder import choose_models, predict_folder
    from autoseg.model.device import prepare_device
    from autoseg.workdir import WorkDir

    if not 0 < args.step_size <= 1:
        raise AutosegInputError("--step-size must be in (0, 1]")
    output_format = output_format_of(args)
    start = time.perf_counter()
    remote = None
    if args.dicomweb is not None:
        remote = fetch_from_dicomweb(args)
        input_folder = remote[2].folder
    else:
        problem = output_folder_problem([args.input], args.output)
        if problem:
            raise AutosegInputError(problem)
        input_folder = args.input
    device = prepare_device(args.device)
    model = model_work_dir(args.model, trusted_keys=args.trust_key)
    if remote is not None and WorkDir.of(model).load_plans().num_channels > 1:
        raise AutosegInputError(f"{args.model}: the model needs {WorkDir.of(model).load_plans().num_channels} "
                                "series per case; --dicomweb segments each series alone (download the study and "
                                "give -i a folder per case)")
    choice = choose_models(model, args.configurations, parse_folds(args.folds) if args.folds else None,
                           args.checkpoint, use_postprocessing=not args.no_postprocessing)
    print(f"models: {' + '.join(choice.configurations)} ({choice.source}), checkpoint {choice.checkpoint}, "
          f"postprocessing {choice.postprocessing or 'none'}, device {device}")
    use_mirroring, reason = mirroring_from_arguments(args, model, choice, device.type)
    print(reason)
    concepts = None
    if args.seg_concepts:
        from autoseg.io.dicom_seg import read_concept_mapping

        concepts = read_concept_mapping(args.seg_concepts)
    failures: list[str] = []
    if remote is not None:
        failures.extend(remote[2].failed[uid] for uid in sorted(remote[2].failed))
        if not remote[2].downloaded and not remote[2].reused:
            for problem in failures:
                print(f"error: {problem}", file=sys.stderr)
            print(f"no image series of study {args.study} could be downloaded; nothing to segment", file=sys.stderr)
            return 1
    report = predict_folder(model, input_folder, args.output, choice, device, use_mirroring=use_mirroring,
                            step_size=args.step_size, save_probabilities_too=args.save_probabilities,
                            overwrite=args.overwrite, output_format=output_format, seg_concepts=concepts,
                            previews=args.preview, backend=args.backend, num_parts=args.num_parts,
                            part_id=args.part_id)
    if args.backend != "torch":
        print("; ".join(report.backends))
    if report.removed_temporaries:
        print(f"removed {len(report.removed_temporaries)} temporary file(s) left by an interrupted run, e.g. "
              f"{report.removed_temporaries[0]}")
    for case_id, damage in sorted(report.redone.items()):
        print(f"predicted {case_id} again: its existing output was damaged ({damage})")
    print(f"{len(report.predicted)} predicted, {len(report.skipped)} already done (skipped; --overwrite redoes "
          f"them), {len(report.failed)} failed, in {time.perf_counter() - start:.1f} s -> {args.output}")
    print(report.summary())
    review = sorted(case for case, entry in report.case_reports.items() if entry["flag"] == "review")
    if report.case_reports:
        print("report.csv / report.json: volume and components per class, model agreement per case"
              + (f"; {len(review)} case(s) flagged for review (agreement < {AGREEMENT_THRESHOLD}): "
                 f"{', '.join(review[:5])}" if review else ""))
    failures.extend(report.failed[case] for case in sorted(report.failed))
    if remote is not None and args.store:
        failures.extend(store_results(remote, args, report))
    for problem in failures:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if failures else 0


def store_results(remote, args: argparse.Namespace, report) -> list[str]:
    """STOW-RS the DICOM-SEG of each series of the study predicted now or before (skipped as done); the
    failures, one line each."""
    from autoseg.io.dicom_seg import DICOM_SEG_ENDING
    from autoseg.pacs.dicomweb import store_segmentations

    client, url, download = remote
    series = set(download.downloaded) | set(download.reused)
    done = [case for case in sorted({*report.predicted, *report.skipped}) if case in series]
    files = [report.outputs.get(case, Path(args.output) / f"{case}{DICOM_SEG_ENDING}") for case in done]
    failed = store_segmentations(client, url, args.study, files, download.folder)
    print(f"{len(files) - len(failed)} DICOM-SEG(s) stored or already stored, {len(failed)} failed -> {url}")
    return [failed[path] for path in files if path in failed]
