from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version = {}
for line in (ROOT / "pointclora" / "__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        exec(line, version)

setup(
    name="pointclora",
    version=version["__version__"],
    description="Collaborative low-rank adaptation (CLoRA) for pre-trained point-cloud transformers",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    # Only the library is installed: top-level `datasets/`, `models/`, `configs/` are the user's shelf and would
    # shadow Hugging Face `datasets` and others if they were packages.
    packages=find_packages(include=["pointclora", "pointclora.*"]),
    package_data={"pointclora": ["assets/*", "resources/**/*"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "numpy>=1.21",
        "einops>=0.6",
        "h5py>=3.0",
        "tensorboard>=2.10",
        "pyyaml>=5.4",
        "tqdm>=4.60",
        "safetensors>=0.4",
        "scikit-learn>=1.0",  # the linear probe (models/probe.py)
        "threadpoolctl>=3.0",  # one BLAS thread per data-loader worker (utils/threads.py)
        "numba>=0.58",  # the compiled exact FPS of large clouds (ops/_fps_numba.py); the ops fall back without it
    ],
    extras_require={
        "viz": ["open3d-cpu>=0.17; platform_machine=='x86_64'", "matplotlib>=3.5"],
        # timm (with torchvision): the openness tests put CLoRA/LoRA on a timm ViT; `test` is dev's test-only part.
        # onnx + onnxruntime: the export parity tests run in CI (never skipped).
        "test": ["pytest>=7", "pytest-xdist>=3", "fpsample>=0.3", "timm>=0.9", "onnx>=1.15", "onnxruntime>=1.17"],
        # mutmut: `make mutants` (bench/mutants.py), mutation testing of the core modules; not needed by the tests.
        "dev": ["pytest>=7", "pytest-xdist>=3", "ruff>=0.4", "fpsample>=0.3", "timm>=0.9", "onnx>=1.15",
                "onnxruntime>=1.17", "mutmut>=3.8,<4"],
        # tools/export.py --format onnx and running the exported file (pointclora.deploy).
        "deploy": ["onnx>=1.15", "onnxruntime>=1.17"],
        # Side-by-side benchmarks only (bench/ops.py, bench/adapters.py): never imported by the library.
        "bench": ["fpsample>=0.3", "peft>=0.10"],
    },
    # Each tool lives in pointclora.cli.<tool>.main(argv); tools/<tool>.py is a thin shim for repo users.
    entry_points={
        "console_scripts": [
            "pointclora-finetune=pointclora.cli.finetune:main",
            "pointclora-evaluate=pointclora.cli.evaluate:main",
            "pointclora-predict=pointclora.cli.predict:main",
            "pointclora-fewshot=pointclora.cli.fewshot:main",
            "pointclora-segment=pointclora.cli.segment:main",
            "pointclora-pretrain=pointclora.cli.pretrain:main",
            "pointclora-visualize=pointclora.cli.visualize:main",
            "pointclora-count-params=pointclora.cli.count_params:main",
            "pointclora-merge-adapter=pointclora.cli.merge_adapter:main",
            "pointclora-plot-runs=pointclora.cli.plot_runs:main",
            "pointclora-probe=pointclora.cli.probe:main",
            "pointclora-export=pointclora.cli.export:main",
        ]
    },
    classifiers=["Programming Language :: Python :: 3"],
)
