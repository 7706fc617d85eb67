"""Install autoseg: ``pip install -e .`` gives the ``autoseg`` command."""

from setuptools import find_packages, setup

setup(
    name="autoseg",
    version="0.1.0",
    description="Self-configuring medical image segmentation (nnU-Net-style) for CT and MRI",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["autoseg", "autoseg.*"]),
    python_requires=">=3.10",
    install_requires=[
        # Install torch first (see README): on a CPU-only machine
        # `pip install torch==2.13.0` takes the local CPU wheel.
        "torch>=2.1",
        "numpy>=1.24",
        "SimpleITK>=2.2",
        "batchgenerators>=0.25",
        "scipy>=1.10",
        "scikit-learn>=1.2",
        "tqdm>=4.60",
        "matplotlib>=3.6",
    ],
    extras_require={
        # DICOM series input and DICOM-SEG output (autoseg.io.dicom), compressed transfer syntaxes
        # (JPEG 2000, JPEG-LS, JPEG), and the PACS node: DICOMweb and DIMSE (autoseg.pacs).
        "dicom": ["pydicom>=2.4", "highdicom>=0.22", "pylibjpeg>=2", "pylibjpeg-openjpeg>=2", "pynetdicom>=2.1",
                  "dicomweb-client>=0.59"],
        # ONNX Runtime and OpenVINO inference backends (autoseg.inference.backends).
        "fast": ["onnx>=1.14", "onnxruntime>=1.16", "openvino>=2024.0"],
        # Signed model bundles: `autoseg keygen`, `export --sign-key`, `predict --trust-key`.
        "sign": ["cryptography>=41"],
        "test": ["pytest>=7", "ruff>=0.4", "hypothesis>=6", "pydicom>=2.4", "highdicom>=0.22", "pylibjpeg>=2",
                 "pylibjpeg-openjpeg>=2", "pynetdicom>=2.1", "dicomweb-client>=0.59", "onnx>=1.14",
                 "onnxruntime>=1.16", "openvino>=2024.0", "cryptography>=41"],
    },
    entry_points={"console_scripts": ["autoseg=autoseg.cli:main"]},
)
