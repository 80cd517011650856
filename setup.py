"""Package discovery only (metadata lives in pyproject.toml): the top-level `calibration/` folder ships inside
the package as `simba_convert._calibration`, which the declarative configuration cannot express next to an
automatic package search."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["simba_convert", "simba_convert.*"]) + ["simba_convert._calibration"],
    package_dir={"simba_convert._calibration": "calibration"},
)
