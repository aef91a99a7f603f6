"""Build pyinverse._C with CMake + Ninja (pybind11 cmake_example style).

Environment knobs (all optional):
  PYINVERSE_CUDA=ON|OFF|AUTO   compile the CUDA twins (AUTO: when CMake finds nvcc)
  PYINVERSE_CUDA_ARCHS="80;90" CUDA architectures
  PYINVERSE_SANITIZE=ON        ASan + UBSan build (see README, "Sanitizer build")
  PYINVERSE_NATIVE=ON          -march=native instead of the portable build with runtime ISA dispatch
  PYINVERSE_BUILD_TYPE=Release|Debug|RelWithDebInfo
  CMAKE_BUILD_PARALLEL_LEVEL   parallel compile jobs
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: str = "") -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        extdir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_type = os.environ.get("PYINVERSE_BUILD_TYPE", "Release")
        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DPYINVERSE_VERSION={self.distribution.get_version()}",
            "-GNinja",
        ]
        for knob in ("PYINVERSE_CUDA", "PYINVERSE_CUDA_ARCHS", "PYINVERSE_SANITIZE", "PYINVERSE_NATIVE"):
            if os.environ.get(knob):
                cmake_args.append(f"-D{knob}={os.environ[knob]}")
        try:
            import pybind11

            cmake_args.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
        except ImportError:
            pass
        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cmake", ext.sourcedir, *cmake_args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", "."], cwd=build_temp, check=True)


setup(ext_modules=[CMakeExtension("pyinverse._C")], cmdclass={"build_ext": CMakeBuild})
